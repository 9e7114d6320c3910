// Matrix products straight from a GGUF's Q4_1 / Q8_0 blocks, on AVX2 (or AVX-512 VNNI).
//
// The maths is llama.cpp's (ggml's vec_dot_q4_1_q8_1 / q8_0_q8_0): the activations
// are rounded to signed 8-bit blocks of 32 with one float scale per block, and every
// block's dot product is an exact integer sum, scaled once in float32. The weights
// are the GGUF's own values -- nibbles, bytes, float16 scales and minimums -- in
// another order (block_weights.py packs them):
//
// **Tiles of 8 weight rows.** A tile's block is the 8 rows' 32 weights interleaved
// in groups of 4: 32 bytes hold group k (weights 4k..4k+3) of all 8 rows, 4 bytes a
// row. Broadcast an activation block's group k to all 8 lanes, and one maddubs +
// madd (or one vpdpbusd) gives lane i row i's 4 products: after the 8 groups, the 8
// lanes hold the 8 rows' exact block sums, scaled by the 8 rows' scales in one
// vector. No horizontal sum and no per-row set-up is left, which is what bound the
// row-at-a-time kernels on a 576-wide matrix (18 blocks a row): measured on an
// AVX2 EPYC, 4.0x fewer cycles for one activation row and 2.4x for four.
//
// Summation order is fixed per (activation row, weight row): exact integer block
// sums, then one float32 chain over the blocks in order (scale term, then minimum
// term, per block). It depends neither on how many activation rows are multiplied
// together nor on how tiles are split across threads, so a batched decode step gives
// each sequence bitwise the logits it gets alone; and the VNNI integer sums are the
// AVX2 ones, so the two ISAs agree bitwise.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include "block_ops.h"
#include "work_share.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kTile = 8;      // weight rows interleaved in a tile
constexpr int64_t kRowTile = 4;   // activation rows per pass over a tile
constexpr int64_t kQ4TileBlockBytes = kTile * kBlock / 2;
constexpr int64_t kQ8TileBlockBytes = kTile * kBlock;

// Activation rows as 8-bit blocks: q = round(x / d), d = max|x| / 127 per block,
// and s = d * sum(q) (what a Q4_1 minimum multiplies). A block holding a NaN or
// infinity gets d = NaN, so the outputs it touches are NaN, as in float32.
struct QuantizedRows {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<float> s;
};

inline float horizontal_sum(__m256 v) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

inline float horizontal_max(__m256 v) {
  __m128 half = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  half = _mm_max_ps(half, _mm_movehl_ps(half, half));
  half = _mm_max_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

inline int horizontal_sum_epi32(__m256i v) {
  __m128i half = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  half = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0x4E));
  half = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0xB1));
  return _mm_cvtsi128_si32(half);
}

// One activation block of 32 floats into 32 bytes; returns sum(q). Vector code for
// what a scalar loop did (it was a tenth of a batched step): the division is IEEE's
// in both, and rounding to nearest even is nearbyint's, so the bytes are the same.
inline int quantize_block(const float* v, float d, bool scaled, int8_t* q) {
  if (!scaled) {
    std::memset(q, 0, kBlock);
    return 0;
  }
  const __m256 divisor = _mm256_set1_ps(d);
  __m256i values[4];
  for (int i = 0; i < 4; ++i)
    values[i] = _mm256_cvtps_epi32(_mm256_round_ps(
        _mm256_div_ps(_mm256_loadu_ps(v + 8 * i), divisor),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(values[0], values[1]),
                                       _mm256_add_epi32(values[2], values[3]));
  // packs works within 128-bit lanes: dword k of the result holds values[k / 2]'s
  // half k % 2 after this permutation, i.e. the bytes in order.
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(values[0], values[1]),
                                           _mm256_packs_epi32(values[2], values[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  return horizontal_sum_epi32(sum);
}

QuantizedRows quantize_rows(const float* x, int64_t rows, int64_t cols) {
  const int64_t blocks = cols / kBlock;
  QuantizedRows out{std::vector<int8_t>(rows * cols), std::vector<float>(rows * blocks),
                    std::vector<float>(rows * blocks)};
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const float* v = x + r * cols + b * kBlock;
      __m256 amax = _mm256_setzero_ps();
      __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
      for (int i = 0; i < 4; ++i) {
        const __m256 lane = _mm256_loadu_ps(v + 8 * i);
        // x - x is 0 exactly when x is finite (NaN for NaN and both infinities).
        finite = _mm256_and_ps(finite, _mm256_cmp_ps(_mm256_sub_ps(lane, lane),
                                                     _mm256_setzero_ps(), _CMP_EQ_OQ));
        amax = _mm256_max_ps(amax, _mm256_and_ps(lane, magnitude));
      }
      const bool all_finite = _mm256_movemask_ps(finite) == 0xFF;
      const float d = all_finite ? horizontal_max(amax) / 127.0f : NAN;
      // A division, not a multiplication by 1 / d: that inverse overflows for a
      // subnormal d. |v / d| <= 127 always, and ties round to even.
      const int sum =
          quantize_block(v, d, all_finite && d != 0.0f, out.q.data() + r * cols + b * kBlock);
      out.d[r * blocks + b] = d;
      out.s[r * blocks + b] = d * static_cast<float>(sum);
    }
  }
  return out;
}

inline __m256i broadcast_group(const int8_t* x, int64_t group) {
  int32_t bytes;
  std::memcpy(&bytes, x + 4 * group, 4);
  return _mm256_set1_epi32(bytes);
}

}  // namespace

// The tile kernels, compiled twice from one source: for AVX2, and for AVX-512 VNNI
// (256-bit vpdpbusd), which only changes how the exact integer block sums are formed.
#define PROMPTCACHE_TILE_NAMESPACE avx2_tiles
#define PROMPTCACHE_TILE_VNNI 0
#include "block_tiles.inc"
#undef PROMPTCACHE_TILE_NAMESPACE
#undef PROMPTCACHE_TILE_VNNI

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")
#define PROMPTCACHE_TILE_NAMESPACE vnni_tiles
#define PROMPTCACHE_TILE_VNNI 1
#include "block_tiles.inc"
#undef PROMPTCACHE_TILE_NAMESPACE
#undef PROMPTCACHE_TILE_VNNI
#pragma GCC pop_options

namespace {

bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}

// Which tiles run: AVX-512 VNNI where the CPU has it, else AVX2. Set only by
// kernel_isa (the tests compare the two); read once per matrix product.
std::atomic<bool> use_vnni{cpu_has_vnni()};

// "auto" | "avx2" | "avx512-vnni" -> the one now used ("avx512-vnni" where the CPU
// lacks it is an error). "" asks without changing it.
std::string kernel_isa(const std::string& requested) {
  if (requested == "avx2") {
    use_vnni = false;
  } else if (requested == "auto") {
    use_vnni = cpu_has_vnni();
  } else if (requested == "avx512-vnni") {
    TORCH_CHECK(cpu_has_vnni(), "this CPU lacks AVX-512 VNNI (avx512f/bw/dq/vl/vnni)");
    use_vnni = true;
  } else {
    TORCH_CHECK(requested.empty(), "kernel_isa takes auto, avx2, avx512-vnni or '', not ",
                requested);
  }
  return use_vnni ? "avx512-vnni" : "avx2";
}

// The checked tile count of a matrix in tiles: data [tiles, blocks, tile_bytes], scales
// (and minimums) float16 [tiles, blocks, 8], covering `out_features` rows.
int64_t checked_tiles(const at::Tensor& x, const at::Tensor& data, const at::Tensor& scales,
                      int64_t out_features, int64_t tile_bytes, at::ScalarType data_type) {
  TORCH_CHECK(scales.scalar_type() == at::kHalf && scales.is_contiguous() && scales.dim() == 3 &&
                  scales.size(2) == kTile,
              "scales must be contiguous float16 [tiles, in_features / 32, 8]");
  const int64_t tiles = scales.size(0);
  const int64_t blocks = scales.size(1);
  TORCH_CHECK(out_features > (tiles - 1) * kTile && out_features <= tiles * kTile,
              out_features, " output rows do not fill ", tiles, " tiles of 8");
  TORCH_CHECK(data.scalar_type() == data_type && data.is_contiguous() && data.dim() == 3 &&
                  data.size(0) == tiles && data.size(1) == blocks && data.size(2) == tile_bytes,
              "data must be contiguous [tiles, in_features / 32, ", tile_bytes, "] (",
              at::toString(data_type), ")");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "x must be a contiguous float32 [rows, in_features] tensor");
  TORCH_CHECK(x.size(1) == blocks * kBlock, "x has ", x.size(1), " columns; the matrix has ",
              blocks * kBlock);
  return tiles;
}

// Tiles per chunk of a product's work (work_share.h): about eight chunks a thread, so
// a helper that is preempted holds up little, and none for a small product (a chunk
// handed over costs about as much as a few tiles).
int64_t tiles_per_chunk(int64_t tiles, int64_t threads) {
  constexpr int64_t kFewestTiles = 4;
  return std::max(kFewestTiles, (tiles + threads * 8 - 1) / (threads * 8));
}

// Tiles ahead whose bytes are asked for before they are needed: a decode step reads
// every weight once, from memory (the matrices are far larger than the caches).
inline void prefetch(const void* start, int64_t bytes) {
  const char* p = static_cast<const char*>(start);
  for (int64_t offset = 0; offset < bytes; offset += 64) _mm_prefetch(p + offset, _MM_HINT_T0);
}

// out [rows, out_features] = x times the tiled matrix; `tile_fn<R>(tile, quantized,
// first, out8)` writes R activation rows' 8 outputs of one tile, 8 floats a row.
template <typename TileFn>
at::Tensor for_each_tile(const at::Tensor& x, int64_t tiles, int64_t out_features,
                         TileFn tile_fn) {
  const int64_t rows = x.size(0);
  const int64_t cols = x.size(1);
  at::Tensor out = at::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return out;
  const QuantizedRows quantized = quantize_rows(x.data_ptr<float>(), rows, cols);
  float* result = out.data_ptr<float>();
  const int64_t threads = at::get_num_threads();
  const int64_t chunk_tiles = tiles_per_chunk(tiles, threads);
  auto chunk_body = [&](int64_t chunk) {
    const int64_t end = std::min(tiles, (chunk + 1) * chunk_tiles);
    for (int64_t tile = chunk * chunk_tiles; tile < end; ++tile) {
      const int64_t width = std::min(kTile, out_features - tile * kTile);
      for (int64_t first = 0; first < rows; first += kRowTile) {
        alignas(32) float outputs[kRowTile * kTile];
        const int64_t count = std::min(kRowTile, rows - first);
        switch (count) {
          case 4: tile_fn.template operator()<4>(tile, quantized, first, outputs); break;
          case 3: tile_fn.template operator()<3>(tile, quantized, first, outputs); break;
          case 2: tile_fn.template operator()<2>(tile, quantized, first, outputs); break;
          default: tile_fn.template operator()<1>(tile, quantized, first, outputs); break;
        }
        for (int64_t r = 0; r < count; ++r)
          std::copy_n(outputs + r * kTile, width, result + (first + r) * out_features + tile * kTile);
      }
    }
  };
  promptcache::share_chunks((tiles + chunk_tiles - 1) / chunk_tiles, threads, chunk_body);
  return out;
}

}  // namespace

namespace promptcache {

at::Tensor q4_1_linear(const at::Tensor& x, const at::Tensor& nibbles, const at::Tensor& scales,
                       const at::Tensor& mins, int64_t out_features) {
  const int64_t tiles =
      checked_tiles(x, nibbles, scales, out_features, kQ4TileBlockBytes, at::kByte);
  TORCH_CHECK(mins.sizes() == scales.sizes() && mins.scalar_type() == at::kHalf &&
                  mins.is_contiguous(),
              "mins must be contiguous float16, shaped as scales");
  const int64_t blocks = scales.size(1);
  const int64_t cols = x.size(1);
  const uint8_t* w = nibbles.data_ptr<uint8_t>();
  const auto* d = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  const auto* m = reinterpret_cast<const uint16_t*>(mins.data_ptr<at::Half>());
  const int64_t tile_bytes = blocks * kQ4TileBlockBytes;
  const int64_t tile_scales = blocks * kTile;
  const bool vnni = use_vnni;
  auto tile_fn = [&]<int R>(int64_t tile, const QuantizedRows& q, int64_t first, float* out) {
    if (first == 0 && tile + 1 < tiles) {
      prefetch(w + (tile + 1) * tile_bytes, tile_bytes);
      prefetch(d + (tile + 1) * tile_scales, tile_scales * 2);
      prefetch(m + (tile + 1) * tile_scales, tile_scales * 2);
    }
    const uint8_t* tw = w + tile * tile_bytes;
    const uint16_t* td = d + tile * tile_scales;
    const uint16_t* tm = m + tile * tile_scales;
    if (vnni)
      vnni_tiles::q4_tile<R>(tw, td, tm, blocks, q.q.data(), q.d.data(), q.s.data(), first, cols, out);
    else
      avx2_tiles::q4_tile<R>(tw, td, tm, blocks, q.q.data(), q.d.data(), q.s.data(), first, cols, out);
  };
  return for_each_tile(x, tiles, out_features, tile_fn);
}

at::Tensor q8_0_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scales,
                       int64_t out_features) {
  const int64_t tiles =
      checked_tiles(x, values, scales, out_features, kQ8TileBlockBytes, at::kChar);
  const int64_t blocks = scales.size(1);
  const int64_t cols = x.size(1);
  const int8_t* w = values.data_ptr<int8_t>();
  const auto* d = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  const int64_t tile_bytes = blocks * kQ8TileBlockBytes;
  const int64_t tile_scales = blocks * kTile;
  const bool vnni = use_vnni;
  auto tile_fn = [&]<int R>(int64_t tile, const QuantizedRows& q, int64_t first, float* out) {
    if (first == 0 && tile + 1 < tiles) {
      prefetch(w + (tile + 1) * tile_bytes, tile_bytes);
      prefetch(d + (tile + 1) * tile_scales, tile_scales * 2);
    }
    const int8_t* tw = w + tile * tile_bytes;
    const uint16_t* td = d + tile * tile_scales;
    if (vnni)
      vnni_tiles::q8_tile<R>(tw, td, blocks, q.q.data(), q.d.data(), first, cols, out);
    else
      avx2_tiles::q8_tile<R>(tw, td, blocks, q.q.data(), q.d.data(), first, cols, out);
  };
  return for_each_tile(x, tiles, out_features, tile_fn);
}

// ---- One decode query's attention over a float32 KV cache ----------------------
//
// A decode step's attention is, per layer, a handful of tiny operations (write
// the key and value, two bmm, a softmax); dispatching them cost more than their
// maths, about a quarter of a step on an AVX2 EPYC here. This is all of it in
// one call. Per head, in a fixed order that depends on nothing but the position:
// scores q.k * scale, their maximum, exp (a polynomial, below), the sum, and the
// weighted sum of values divided by it.

namespace {

// exp(x) for x <= 0 (scores minus their maximum), Cephes' polynomial as in
// avx_mathfun: |relative error| < 2e-7 over the range; exp(-88) and below is 0.
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.33654f), x);  // x second: a NaN stays NaN
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(exponent));
}

inline float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float total = horizontal_sum(acc);
  for (; i < n; ++i) total = std::fma(a[i], b[i], total);
  return total;
}

}  // namespace

// qk: [heads + kv_heads, dim] (RoPE'd queries, then keys); value: [kv_heads, dim];
// kv: [2, kv_heads, capacity, dim], this layer's cache. Writes the new key and value
// at `position`, returns [heads * dim].
at::Tensor decode_attention(const at::Tensor& qk, const at::Tensor& value, const at::Tensor& kv,
                            int64_t position, double scale) {
  TORCH_CHECK(kv.dim() == 4 && kv.size(0) == 2 && kv.scalar_type() == at::kFloat &&
                  kv.stride(3) == 1 && kv.stride(2) == kv.size(3),
              "kv must be float32 [2, kv_heads, capacity, dim] with contiguous rows");
  const int64_t kv_heads = kv.size(1);
  const int64_t capacity = kv.size(2);
  const int64_t dim = kv.size(3);
  TORCH_CHECK(qk.dim() == 2 && qk.is_contiguous() && qk.scalar_type() == at::kFloat &&
                  qk.size(1) == dim && qk.size(0) > kv_heads && (qk.size(0) - kv_heads) % kv_heads == 0,
              "qk must be contiguous float32 [heads + kv_heads, dim]");
  TORCH_CHECK(value.dim() == 2 && value.is_contiguous() && value.scalar_type() == at::kFloat &&
                  value.size(0) == kv_heads && value.size(1) == dim,
              "value must be contiguous float32 [kv_heads, dim]");
  TORCH_CHECK(position >= 0 && position < capacity, "position ", position,
              " is outside the KV buffer (capacity ", capacity, ")");
  const int64_t heads = qk.size(0) - kv_heads;
  const int64_t group = heads / kv_heads;
  const int64_t keys = position + 1;
  const float* q = qk.data_ptr<float>();
  float* cache = kv.data_ptr<float>();
  const int64_t head_stride = kv.stride(1);
  const int64_t half_stride = kv.stride(0);
  for (int64_t g = 0; g < kv_heads; ++g) {
    std::copy_n(q + (heads + g) * dim, dim, cache + g * head_stride + position * dim);
    std::copy_n(value.data_ptr<float>() + g * dim, dim,
                cache + half_stride + g * head_stride + position * dim);
  }
  at::Tensor out = at::empty({heads * dim}, qk.options());
  float* result = out.data_ptr<float>();
  const float factor = static_cast<float>(scale);
  // Heads split across threads only when there is enough to split: handing a chunk
  // over costs a microsecond or so, a head over a few hundred keys not much more.
  const int64_t heads_per_chunk = keys * dim < 32768 ? heads : 1;
  auto chunk_body = [&](int64_t chunk) {
    thread_local std::vector<float> scores;
    scores.resize(keys + 8);
    const int64_t end = std::min(heads, (chunk + 1) * heads_per_chunk);
    for (int64_t h = chunk * heads_per_chunk; h < end; ++h) {
      const float* query = q + h * dim;
      const float* k = cache + (h / group) * head_stride;
      const float* v = cache + half_stride + (h / group) * head_stride;
      float top = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        scores[j] = dot(query, k + j * dim, dim) * factor;
        top = std::fmax(top, scores[j]);
      }
      __m256 sum8 = _mm256_setzero_ps();
      int64_t j = 0;
      for (; j + 8 <= keys; j += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores.data() + j), _mm256_set1_ps(top)));
        _mm256_storeu_ps(scores.data() + j, e);
        sum8 = _mm256_add_ps(sum8, e);
      }
      float total = horizontal_sum(sum8);
      if (j < keys) {  // the tail through the same polynomial, padded with exp(-inf) = 0
        alignas(32) float tail[8];
        for (int64_t t = 0; t < 8; ++t) tail[t] = j + t < keys ? scores[j + t] - top : -INFINITY;
        _mm256_store_ps(tail, exp_nonpositive(_mm256_load_ps(tail)));
        for (int64_t t = 0; j + t < keys; ++t) {
          scores[j + t] = tail[t];
          total += tail[t];
        }
      }
      float* o = result + h * dim;
      std::fill_n(o, dim, 0.0f);
      for (int64_t key = 0; key < keys; ++key) {
        const float p = scores[key];
        const float* row = v + key * dim;
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8)
          _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_set1_ps(p), _mm256_loadu_ps(row + i), _mm256_loadu_ps(o + i)));
        for (; i < dim; ++i) o[i] = std::fma(p, row[i], o[i]);
      }
      const float inverse = 1.0f / total;
      for (int64_t i = 0; i < dim; ++i) o[i] *= inverse;
    }
  };
  promptcache::share_chunks((heads + heads_per_chunk - 1) / heads_per_chunk,
                            at::get_num_threads(), chunk_body);
  return out;
}

}  // namespace promptcache

TORCH_LIBRARY(promptcache_blocks, m) {
  m.def("q4_1_linear(Tensor x, Tensor nibbles, Tensor scales, Tensor mins, int out_features) -> Tensor");
  m.def("q8_0_linear(Tensor x, Tensor values, Tensor scales, int out_features) -> Tensor");
  m.def("decode_attention(Tensor qk, Tensor value, Tensor(a!) kv, int position, float scale) -> Tensor");
  m.def("kernel_isa(str requested) -> str", &kernel_isa);
}

TORCH_LIBRARY_IMPL(promptcache_blocks, CPU, m) {
  m.impl("q4_1_linear", &promptcache::q4_1_linear);
  m.impl("q8_0_linear", &promptcache::q8_0_linear);
  m.impl("decode_attention", &promptcache::decode_attention);
}
