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
#include "vector_math.h"
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
  std::vector<uint8_t> offset;  // q + 128 (q ^ 0x80) for the Q8 pairs; empty otherwise
};

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

QuantizedRows quantize_rows(const float* x, int64_t rows, int64_t cols, bool offsets) {
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
  if (offsets) {
    out.offset.resize(out.q.size());
    for (size_t i = 0; i < out.q.size(); ++i)
      out.offset[i] = static_cast<uint8_t>(out.q[i]) ^ 0x80;
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
// (vpdpbusd), which only changes how the exact integer block sums are formed. The VNNI copy
// also has 512-bit kernels for two neighbouring tiles a pass (q4_tile_pair, q8_tile_pair):
// every lane does its row's operations in q4_tile's order, so they are bitwise the same.
// Measured on a 2-core Zen 5, 8 activation rows, against the 256-bit VNNI tiles (three
// runs each, alternated; a noisy machine): 3072x576 61-118 -> 41-48 us, 576x1536 33-67 ->
// 30-38, 960x576 23-44 -> 18-21, the 49152x576 Q8_0 head 1.1-3.1 -> 0.9-1.7 ms.
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
template <typename TileFn, typename PairFn>
at::Tensor for_each_tile(const at::Tensor& x, int64_t tiles, int64_t out_features,
                         TileFn tile_fn, PairFn pair_fn, bool pairs, bool offsets) {
  const int64_t rows = x.size(0);
  const int64_t cols = x.size(1);
  at::Tensor out = at::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return out;
  const QuantizedRows quantized = quantize_rows(x.data_ptr<float>(), rows, cols, offsets);
  float* result = out.data_ptr<float>();
  const int64_t threads = at::get_num_threads();
  const int64_t chunk_tiles = tiles_per_chunk(tiles, threads);
  // Two tiles a pass where the 512-bit kernels run (bitwise the single-tile results), for
  // 2 rows or more: one activation row measured a few percent faster on single tiles.
  const bool pair_rows = pairs && rows > 1;
  auto chunk_body = [&](int64_t chunk) {
    const int64_t end = std::min(tiles, (chunk + 1) * chunk_tiles);
    for (int64_t tile = chunk * chunk_tiles; tile < end;) {
      const int64_t span = pair_rows && tile + 1 < end ? 2 : 1;
      const int64_t stride = span * kTile;
      for (int64_t first = 0; first < rows; first += kRowTile) {
        alignas(64) float outputs[kRowTile * 2 * kTile];
        const int64_t count = std::min(kRowTile, rows - first);
        if (span == 2) {
          switch (count) {
            case 4: pair_fn.template operator()<4>(tile, quantized, first, outputs); break;
            case 3: pair_fn.template operator()<3>(tile, quantized, first, outputs); break;
            case 2: pair_fn.template operator()<2>(tile, quantized, first, outputs); break;
            default: pair_fn.template operator()<1>(tile, quantized, first, outputs); break;
          }
        } else {
          switch (count) {
            case 4: tile_fn.template operator()<4>(tile, quantized, first, outputs); break;
            case 3: tile_fn.template operator()<3>(tile, quantized, first, outputs); break;
            case 2: tile_fn.template operator()<2>(tile, quantized, first, outputs); break;
            default: tile_fn.template operator()<1>(tile, quantized, first, outputs); break;
          }
        }
        for (int64_t r = 0; r < count; ++r)
          for (int64_t t = 0; t < span; ++t) {
            const int64_t width = std::min(kTile, out_features - (tile + t) * kTile);
            std::copy_n(outputs + r * stride + t * kTile, width,
                        result + (first + r) * out_features + (tile + t) * kTile);
          }
      }
      tile += span;
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
  auto pair_fn = [&]<int R>(int64_t tile, const QuantizedRows& q, int64_t first, float* out) {
    if (first == 0 && tile + 2 < tiles) {
      prefetch(w + (tile + 2) * tile_bytes, 2 * tile_bytes);
      prefetch(d + (tile + 2) * tile_scales, 2 * tile_scales * 2);
      prefetch(m + (tile + 2) * tile_scales, 2 * tile_scales * 2);
    }
    const uint8_t* tw = w + tile * tile_bytes;
    const uint16_t* td = d + tile * tile_scales;
    const uint16_t* tm = m + tile * tile_scales;
    vnni_tiles::q4_tile_pair<R>(tw, tw + tile_bytes, td, td + tile_scales, tm, tm + tile_scales,
                                blocks, q.q.data(), q.d.data(), q.s.data(), first, cols, out);
  };
  return for_each_tile(x, tiles, out_features, tile_fn, pair_fn, vnni, false);
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
  auto pair_fn = [&]<int R>(int64_t tile, const QuantizedRows& q, int64_t first, float* out) {
    if (first == 0 && tile + 2 < tiles) {
      prefetch(w + (tile + 2) * tile_bytes, 2 * tile_bytes);
      prefetch(d + (tile + 2) * tile_scales, 2 * tile_scales * 2);
    }
    const int8_t* tw = w + tile * tile_bytes;
    const uint16_t* td = d + tile * tile_scales;
    vnni_tiles::q8_tile_pair<R>(tw, tw + tile_bytes, td, td + tile_scales, blocks,
                                q.offset.data(), q.d.data(), first, cols, out);
  };
  // x + 128 bytes: the Q8 pairs' unsigned side (only where pairs run: 2 rows or more).
  return for_each_tile(x, tiles, out_features, tile_fn, pair_fn, vnni, vnni && x.size(0) > 1);
}

// ---- Decode queries' attention over float32 KV caches ---------------------------
//
// A decode step's attention is, per layer, a handful of tiny operations (write
// the key and value, two bmm, a softmax); dispatching them cost more than their
// maths, about a quarter of a step on an AVX2 EPYC here. This is all of it in
// one call. Per head, in a fixed order that depends on nothing but the position:
// scores q.k * scale, their maximum, exp (a polynomial, below), the sum, and the
// weighted sum of values divided by it.
//
// The query heads that share a KV head (grouped-query attention) run together, so
// each key and value row is read from memory once for the group, not once a head:
// past a few hundred positions the KV rows, not the maths, are what a step waits
// for (SmolLM2: 3 query heads a KV head, 2 MB of KV a layer at 1,400 positions).
// And a batch's rows run as one work-shared call over (rows, KV head) pairs.
//
// A prompt chunk's rows (int4 prompts: one sequence, consecutive positions) attend
// in blocks of 4 (with the AVX-512 kernels): a block's 12 queries of a KV head share
// each load of a key or value row, where each row read them from L2 or L3 on its own.
// 512 rows at positions 848-1359, 2 threads: 9.8 ms a layer before, 5.4-6.2 after.
// Each query still runs its own operations in its own order, so a prompt token's
// attention is bitwise a decode step's, however the prompt was chunked.

namespace {

// Each of 8 accumulators' 8 lanes summed, the 8 sums times `factor` stored in key order.
inline void store_eight_sums(const __m256* acc, float factor, float* out) {
  const __m256 first = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
  const __m256 second = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
  const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(first, second, 0x20),
                                    _mm256_permute2f128_ps(first, second, 0x31));
  _mm256_storeu_ps(out, _mm256_mul_ps(sums, _mm256_set1_ps(factor)));
}

// out[t] = (q . k[t]) * factor for 8 consecutive key rows k [8, dim], dim a multiple of 8.
inline void eight_scores(const float* q, const float* k, int64_t dim, float factor, float* out) {
  __m256 acc[8];
  for (int t = 0; t < 8; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t c = 0; c < dim; c += 8) {
    const __m256 query = _mm256_loadu_ps(q + c);
    for (int t = 0; t < 8; ++t) acc[t] = _mm256_fmadd_ps(query, _mm256_loadu_ps(k + t * dim + c), acc[t]);
  }
  store_eight_sums(acc, factor, out);
}

// AVX-512 has no hadd: two shuffles and an add are _mm256_hadd_ps of both 256-bit halves.
__attribute__((target("avx512f"))) inline __m512 hadd_halves(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xDD));
}

// store_eight_sums for both 256-bit halves of 8 accumulators at once, the same additions
// per sum: lanes 0-7 of the result are the sums of acc[t]'s low halves (t = 0..7),
// lanes 8-15 of the high halves, each times `factor`.
__attribute__((target("avx512f"))) inline __m512 eight_sums_by_half(const __m512* acc,
                                                                    float factor) {
  const __m512 first = hadd_halves(hadd_halves(acc[0], acc[1]), hadd_halves(acc[2], acc[3]));
  const __m512 second = hadd_halves(hadd_halves(acc[4], acc[5]), hadd_halves(acc[6], acc[7]));
  // 128-bit lanes: first = [0-3 low, 0-3 high] of the low halves, then of the high
  // halves; second the same for 4-7. low + high is each sum.
  const __m512 low = _mm512_shuffle_f32x4(first, second, 0x88);
  const __m512 high = _mm512_shuffle_f32x4(first, second, 0xDD);
  const __m512 sums = _mm512_add_ps(low, high);  // low halves' 0-3, high's 0-3, 4-7, 4-7
  return _mm512_mul_ps(_mm512_shuffle_f32x4(sums, sums, 0xD8), _mm512_set1_ps(factor));
}

// Queries two a register for eight_scores_paired: pack[(pair * steps + step) * 16 ..]
// holds dims 8 step .. 8 step + 7 of query 2 pair in lanes 0-7 and of query 2 pair + 1
// in lanes 8-15 (zeros past the last query). steps = dim / 8.
void pack_query_pairs(const float* const* q, int64_t count, int64_t dim, float* pack) {
  const int64_t steps = dim / 8;
  for (int64_t pair = 0; pair < (count + 1) / 2; ++pair)
    for (int64_t step = 0; step < steps; ++step)
      for (int half = 0; half < 2; ++half) {
        float* lanes = pack + (pair * steps + step) * 16 + 8 * half;
        const int64_t query = 2 * pair + half;
        if (query < count)
          std::copy_n(q[query] + 8 * step, 8, lanes);
        else
          std::fill_n(lanes, 8, 0.0f);
      }
}

// eight_scores of 8 keys k [8, dim] for P (at most 3) query pairs of pack_query_pairs,
// in 512-bit registers (AVX-512, with the VNNI kernels): out[q] + key gets query q's.
// A lane runs eight_scores' FMA chain (half 0 for the pair's first query, half 1 for
// its second) and eight_sums_by_half its reduction, so the scores are bitwise
// eight_scores'. Each key row is read once for 2P queries, with no shuffles.
template <int P>
__attribute__((target("avx512f,avx512dq"))) inline void eight_scores_paired(
    const float* pack, int64_t steps, const float* k, int64_t dim, float factor,
    float* const* out, int64_t count, int64_t key) {
  __m512 acc[P][8];
  for (int p = 0; p < P; ++p)
    for (int t = 0; t < 8; ++t) acc[p][t] = _mm512_setzero_ps();
  for (int64_t step = 0; step < steps; ++step) {
    __m512 queries[P];
    for (int p = 0; p < P; ++p) queries[p] = _mm512_loadu_ps(pack + (p * steps + step) * 16);
    for (int t = 0; t < 8; ++t) {
      const __m512 keys = _mm512_broadcast_f32x8(_mm256_loadu_ps(k + t * dim + 8 * step));
      for (int p = 0; p < P; ++p) acc[p][t] = _mm512_fmadd_ps(queries[p], keys, acc[p][t]);
    }
  }
  for (int p = 0; p < P; ++p) {
    const __m512 sums = eight_sums_by_half(acc[p], factor);
    _mm256_storeu_ps(out[2 * p] + key, _mm512_castps512_ps256(sums));
    if (2 * p + 1 < count) _mm256_storeu_ps(out[2 * p + 1] + key, _mm512_extractf32x8_ps(sums, 1));
  }
}

// eight_scores_paired for `count` packed queries, three pairs at a time.
__attribute__((target("avx512f,avx512dq"))) inline void eight_scores_packed(
    const float* pack, int64_t count, const float* k, int64_t dim, float factor,
    float* const* out, int64_t key) {
  const int64_t steps = dim / 8;
  for (int64_t first = 0; first < count; first += 6) {
    const float* pairs = pack + first / 2 * steps * 16;
    const int64_t left = count - first;
    switch ((std::min<int64_t>(6, left) + 1) / 2) {
      case 3: eight_scores_paired<3>(pairs, steps, k, dim, factor, out + first, left, key); break;
      case 2: eight_scores_paired<2>(pairs, steps, k, dim, factor, out + first, left, key); break;
      default: eight_scores_paired<1>(pairs, steps, k, dim, factor, out + first, left, key); break;
    }
  }
}

// scores[0..keys) = exp(scores - max); returns their sum (the tail through the same
// polynomial, padded with exp(-inf) = 0).
float exponentiate(float* scores, int64_t keys) {
  // The largest score, as a std::fmax chain from -inf would give it (NaNs skipped),
  // eight at a time: a maximum is exact in any order. (The scalar chain was a tenth
  // of a long prompt's attention.)
  __m256 top8 = _mm256_set1_ps(-INFINITY);
  int64_t m = 0;
  for (; m + 8 <= keys; m += 8) {
    const __m256 v = _mm256_loadu_ps(scores + m);
    top8 = _mm256_max_ps(top8, _mm256_blendv_ps(v, _mm256_set1_ps(-INFINITY),
                                                 _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  }
  float top = horizontal_max(top8);
  for (; m < keys; ++m) top = std::fmax(top, scores[m]);
  __m256 sum8 = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= keys; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(top)));
    _mm256_storeu_ps(scores + j, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float total = horizontal_sum(sum8);
  if (j < keys) {
    alignas(32) float tail[8];
    for (int64_t t = 0; t < 8; ++t) tail[t] = j + t < keys ? scores[j + t] - top : -INFINITY;
    _mm256_store_ps(tail, exp_nonpositive(_mm256_load_ps(tail)));
    for (int64_t t = 0; j + t < keys; ++t) {
      scores[j + t] = tail[t];
      total += tail[t];
    }
  }
  return total;
}

// o[q] = sum over keys of p[q][key] * v[key], for G queries, 16 columns at a time in
// registers (one pass over the keys per 16 columns: a 64-byte line of each row).
// Columns c.. of weighted_values one at a time (a head size not a multiple of 16).
template <int G>
void weighted_columns(int64_t c, const float* p, int64_t keys, const float* v, int64_t dim,
                      float* o, int64_t o_stride, int64_t p_stride) {
  for (; c < dim; ++c)
    for (int q = 0; q < G; ++q) {
      float total = 0.0f;
      for (int64_t key = 0; key < keys; ++key) total = std::fma(p[q * p_stride + key], v[key * dim + c], total);
      o[q * o_stride + c] = total;
    }
}

template <int G>
void weighted_values(const float* p, int64_t keys, const float* v, int64_t dim, float* o,
                     int64_t o_stride, int64_t p_stride) {
  int64_t c = 0;
  for (; c + 16 <= dim; c += 16) {
    __m256 lo[G];
    __m256 hi[G];
    for (int q = 0; q < G; ++q) lo[q] = hi[q] = _mm256_setzero_ps();
    for (int64_t key = 0; key < keys; ++key) {
      if (key + 32 < keys)  // the values 32 rows ahead (attend_block says why)
        _mm_prefetch(reinterpret_cast<const char*>(v + (key + 32) * dim + c), _MM_HINT_T0);
      const __m256 a = _mm256_loadu_ps(v + key * dim + c);
      const __m256 b = _mm256_loadu_ps(v + key * dim + c + 8);
      for (int q = 0; q < G; ++q) {
        const __m256 weight = _mm256_set1_ps(p[q * p_stride + key]);
        lo[q] = _mm256_fmadd_ps(weight, a, lo[q]);
        hi[q] = _mm256_fmadd_ps(weight, b, hi[q]);
      }
    }
    for (int q = 0; q < G; ++q) {
      _mm256_storeu_ps(o + q * o_stride + c, lo[q]);
      _mm256_storeu_ps(o + q * o_stride + c + 8, hi[q]);
    }
  }
  weighted_columns<G>(c, p, keys, v, dim, o, o_stride, p_stride);
}

// weighted_values for Q queries in 512-bit registers (AVX-512, used with the VNNI
// kernels): query q's weights p[q][0..keys[q]) over value rows v [keys, dim] into o[q].
// Every output column is the FMA chain over the keys in order that weighted_values
// runs, 16 columns a register instead of two halves of 8, so each query's result is
// bitwise weighted_values' alone, whatever it shares a call with. The queries come
// in row order (the first has the fewest keys); all of them take the keys they share
// from one load of each value row -- up to 12 queries, a prompt chunk's 4 rows of a
// KV head's 3 -- and each its own last ones after. 32 columns a pass where the head
// has them, which halves the passes over the value rows and the weight broadcasts.
template <int Q>
__attribute__((target("avx512f"))) void weighted_values_512(const float* const* p,
                                                            const int64_t* keys, const float* v,
                                                            int64_t dim, float* const* o) {
  const int64_t common = keys[0];
  const int64_t most = keys[Q - 1];
  int64_t c = 0;
  for (; c + 32 <= dim; c += 32) {
    __m512 lo[Q];
    __m512 hi[Q];
    for (int q = 0; q < Q; ++q) lo[q] = hi[q] = _mm512_setzero_ps();
    for (int64_t key = 0; key < most; ++key) {
      if (key + 32 < most) {  // as the scores do (attend_block)
        _mm_prefetch(reinterpret_cast<const char*>(v + (key + 32) * dim + c), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(v + (key + 32) * dim + c + 16), _MM_HINT_T0);
      }
      const __m512 a = _mm512_loadu_ps(v + key * dim + c);
      const __m512 b = _mm512_loadu_ps(v + key * dim + c + 16);
      if (key < common) {
        for (int q = 0; q < Q; ++q) {
          const __m512 weight = _mm512_set1_ps(p[q][key]);
          lo[q] = _mm512_fmadd_ps(weight, a, lo[q]);
          hi[q] = _mm512_fmadd_ps(weight, b, hi[q]);
        }
      } else {
        for (int q = 0; q < Q; ++q)
          if (key < keys[q]) {
            const __m512 weight = _mm512_set1_ps(p[q][key]);
            lo[q] = _mm512_fmadd_ps(weight, a, lo[q]);
            hi[q] = _mm512_fmadd_ps(weight, b, hi[q]);
          }
      }
    }
    for (int q = 0; q < Q; ++q) {
      _mm512_storeu_ps(o[q] + c, lo[q]);
      _mm512_storeu_ps(o[q] + c + 16, hi[q]);
    }
  }
  for (; c + 16 <= dim; c += 16)
    for (int q = 0; q < Q; ++q) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t key = 0; key < keys[q]; ++key)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(p[q][key]), _mm512_loadu_ps(v + key * dim + c), acc);
      _mm512_storeu_ps(o[q] + c, acc);
    }
  for (int q = 0; q < Q; ++q) weighted_columns<1>(c, p[q], keys[q], v, dim, o[q], 0, 0);
}

constexpr int64_t kMostWideQueries = 12;

// weighted_values_512 for any number of queries, kMostWideQueries at a time.
void weighted_values_wide(const float* const* p, const int64_t* keys, int64_t count,
                          const float* v, int64_t dim, float* const* o) {
  for (int64_t first = 0; first < count; first += kMostWideQueries) {
    const float* const* pq = p + first;
    const int64_t* kq = keys + first;
    float* const* oq = o + first;
    switch (std::min(kMostWideQueries, count - first)) {
      case 12: weighted_values_512<12>(pq, kq, v, dim, oq); break;
      case 11: weighted_values_512<11>(pq, kq, v, dim, oq); break;
      case 10: weighted_values_512<10>(pq, kq, v, dim, oq); break;
      case 9: weighted_values_512<9>(pq, kq, v, dim, oq); break;
      case 8: weighted_values_512<8>(pq, kq, v, dim, oq); break;
      case 7: weighted_values_512<7>(pq, kq, v, dim, oq); break;
      case 6: weighted_values_512<6>(pq, kq, v, dim, oq); break;
      case 5: weighted_values_512<5>(pq, kq, v, dim, oq); break;
      case 4: weighted_values_512<4>(pq, kq, v, dim, oq); break;
      case 3: weighted_values_512<3>(pq, kq, v, dim, oq); break;
      case 2: weighted_values_512<2>(pq, kq, v, dim, oq); break;
      default: weighted_values_512<1>(pq, kq, v, dim, oq); break;
    }
  }
}

// weighted_values (AVX2) for the `group` heads of one row, up to 6 at once (12
// accumulators of AVX2's 16 registers).
void weighted_values_row(const float* p, int64_t group, int64_t stride, int64_t keys,
                         const float* v, int64_t dim, float* o) {
  for (int64_t first = 0; first < group;) {
    const int64_t count = std::min<int64_t>(6, group - first);
    const float* pf = p + first * stride;
    float* of = o + first * dim;
    switch (count) {
      case 6: weighted_values<6>(pf, keys, v, dim, of, dim, stride); break;
      case 5: weighted_values<5>(pf, keys, v, dim, of, dim, stride); break;
      case 4: weighted_values<4>(pf, keys, v, dim, of, dim, stride); break;
      case 3: weighted_values<3>(pf, keys, v, dim, of, dim, stride); break;
      case 2: weighted_values<2>(pf, keys, v, dim, of, dim, stride); break;
      default: weighted_values<1>(pf, keys, v, dim, of, dim, stride); break;
    }
    first += count;
  }
}

// One row's attention: its layer KV [2, kv_heads, capacity, dim], its queries and key
// [heads + kv_heads, dim] and value [kv_heads, dim].
struct AttentionRow {
  const float* qk;
  const float* value;
  float* cache;
  int64_t head_stride;
  int64_t half_stride;
  int64_t position;
  float* out;
};

void check_kv(const at::Tensor& kv, int64_t position) {
  TORCH_CHECK(kv.dim() == 4 && kv.size(0) == 2 && kv.scalar_type() == at::kFloat &&
                  kv.stride(3) == 1 && kv.stride(2) == kv.size(3),
              "kv must be float32 [2, kv_heads, capacity, dim] with contiguous rows");
  TORCH_CHECK(position >= 0 && position < kv.size(2), "position ", position,
              " is outside the KV buffer (capacity ", kv.size(2), ")");
}

// Rows that attend as one: consecutive rows of one sequence (one cache, each at the
// position after the one before) -- a prompt chunk's. They share the KV rows they
// read, so a block's queries take each key and value row from one load.
struct RowBlock {
  int64_t first;
  int64_t count;
};

// Rows[first, first + count) of a block at KV head g: their `group` query heads each,
// attending over keys 0..position. Every query's scores, softmax and weighted values
// are the operations it runs alone (count 1), in the same order, so a row's result
// does not depend on the rows it shares a block with: a prompt token attends bitwise
// as it would as a decode step.
void attend_block(const AttentionRow* rows, int64_t count, int64_t g, int64_t group,
                  int64_t dim, float factor) {
  const AttentionRow& lead = rows[0];
  const float* k = lead.cache + g * lead.head_stride;
  const float* v = lead.cache + lead.half_stride + g * lead.head_stride;
  const int64_t queries = count * group;
  const int64_t stride = rows[count - 1].position + 1 + 8;
  // Thread-local buffers for the scores, each query's softmax sum and pointers: no
  // allocation per (block, KV head) and layer.
  thread_local std::vector<float> scratch;
  thread_local std::vector<const float*> query_rows;
  thread_local std::vector<float*> score_rows;
  thread_local std::vector<float*> out_rows;
  thread_local std::vector<int64_t> keys;
  scratch.resize(queries * stride + queries);
  query_rows.resize(queries);
  score_rows.resize(queries);
  out_rows.resize(queries);
  keys.resize(queries);
  float* totals = scratch.data() + queries * stride;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t h = 0; h < group; ++h) {
      const int64_t query = i * group + h;
      query_rows[query] = rows[i].qk + (g * group + h) * dim;
      score_rows[query] = scratch.data() + query * stride;
      out_rows[query] = rows[i].out + (g * group + h) * dim;
      keys[query] = rows[i].position + 1;
    }
  // Scores eight keys at a time (eight independent chains, reduced together, where one
  // dot a key waited on one chain) up to the last multiple of 8 of a query's keys,
  // then one dot a key. The keys the block's first row blocks, all queries share.
  auto blocked = [&](int64_t query) { return dim % 8 == 0 ? keys[query] / 8 * 8 : 0; };
  const int64_t shared = blocked(0);
  const bool wide = use_vnni;
  thread_local std::vector<float> pack;
  if (wide && shared > 0) {
    pack.resize((queries + 1) / 2 * dim * 2);
    pack_query_pairs(query_rows.data(), queries, dim, pack.data());
  }
  for (int64_t key = 0; key < shared; key += 8) {
    // 128 keys ahead (and the values 32 rows ahead, weighted_values): a long
    // context's KV comes from DRAM, and without it 30 layers' attention at 1,400 keys
    // took 3.4 ms on 2 threads here, 2.0 with it (0.84 against 1.47 at 700).
    if (key + 136 <= shared)
      for (int64_t line = 0; line < 8 * dim; line += 16)
        _mm_prefetch(reinterpret_cast<const char*>(k + (key + 128) * dim + line), _MM_HINT_T0);
    if (wide)
      eight_scores_packed(pack.data(), queries, k + key * dim, dim, factor, score_rows.data(), key);
    else
      for (int64_t query = 0; query < queries; ++query)
        eight_scores(query_rows[query], k + key * dim, dim, factor, score_rows[query] + key);
  }
  for (int64_t query = 0; query < queries; ++query) {
    const float* q = query_rows[query];
    float* s = score_rows[query];
    int64_t own = shared;
    for (; own < blocked(query); own += 8) eight_scores(q, k + own * dim, dim, factor, s + own);
    for (; own < keys[query]; ++own) s[own] = dot(q, k + own * dim, dim) * factor;
    totals[query] = exponentiate(s, keys[query]);
  }
  if (wide) {
    weighted_values_wide(score_rows.data(), keys.data(), queries, v, dim, out_rows.data());
  } else {
    for (int64_t i = 0; i < count; ++i)
      weighted_values_row(score_rows[i * group], group, stride, keys[i * group], v, dim,
                          out_rows[i * group]);
  }
  for (int64_t query = 0; query < queries; ++query) {
    const float inverse = 1.0f / totals[query];
    for (int64_t i = 0; i < dim; ++i) out_rows[query][i] *= inverse;
  }
}

// Writes each row's key and value at its position, then attends: one chunk per
// (block, KV head) when there is enough to split, else one for all (handing a chunk
// over costs a microsecond or so, a head over a few hundred keys not much more). A
// block is up to kMostWideQueries queries of one sequence's rows with the AVX-512
// kernels (the AVX2 ones have too few registers to share loads: a row a block).
void attend_rows(const std::vector<AttentionRow>& rows, int64_t heads, int64_t kv_heads,
                 int64_t dim, double scale) {
  const int64_t group = heads / kv_heads;
  const int64_t most_rows = use_vnni ? std::max<int64_t>(1, kMostWideQueries / group) : 1;
  int64_t work = 0;
  std::vector<RowBlock> blocks;
  for (size_t r = 0; r < rows.size(); ++r) {
    const AttentionRow& row = rows[r];
    for (int64_t g = 0; g < kv_heads; ++g) {
      std::copy_n(row.qk + (heads + g) * dim, dim, row.cache + g * row.head_stride + row.position * dim);
      std::copy_n(row.value + g * dim, dim,
                  row.cache + row.half_stride + g * row.head_stride + row.position * dim);
    }
    work += (row.position + 1) * dim * heads;
    const AttentionRow* before = r > 0 ? &rows[r - 1] : nullptr;
    const bool continues = before != nullptr && blocks.back().count < most_rows &&
                           before->cache == row.cache && before->head_stride == row.head_stride &&
                           before->half_stride == row.half_stride &&
                           before->position + 1 == row.position;
    if (continues)
      ++blocks.back().count;
    else
      blocks.push_back(RowBlock{static_cast<int64_t>(r), 1});
  }
  const float factor = static_cast<float>(scale);
  // KV head first: consecutive chunks then read one head's keys and values, which a
  // core's L2 holds for a long prompt where all heads' would not.
  const auto block_count = static_cast<int64_t>(blocks.size());
  const int64_t items = block_count * kv_heads;
  const int64_t items_per_chunk = work < 3 * 32768 ? items : 1;
  auto chunk_body = [&](int64_t chunk) {
    const int64_t end = std::min(items, (chunk + 1) * items_per_chunk);
    for (int64_t item = chunk * items_per_chunk; item < end; ++item) {
      const RowBlock& block = blocks[item % block_count];
      attend_block(rows.data() + block.first, block.count, item / block_count, group, dim, factor);
    }
  };
  promptcache::share_chunks((items + items_per_chunk - 1) / items_per_chunk,
                            at::get_num_threads(), chunk_body);
}

}  // namespace

// qk: [heads + kv_heads, dim] (RoPE'd queries, then keys); value: [kv_heads, dim];
// kv: [2, kv_heads, capacity, dim], this layer's cache. Writes the new key and value
// at `position`, returns [heads * dim].
at::Tensor decode_attention(const at::Tensor& qk, const at::Tensor& value, const at::Tensor& kv,
                            int64_t position, double scale) {
  check_kv(kv, position);
  const int64_t kv_heads = kv.size(1);
  const int64_t dim = kv.size(3);
  TORCH_CHECK(qk.dim() == 2 && qk.is_contiguous() && qk.scalar_type() == at::kFloat &&
                  qk.size(1) == dim && qk.size(0) > kv_heads && (qk.size(0) - kv_heads) % kv_heads == 0,
              "qk must be contiguous float32 [heads + kv_heads, dim]");
  TORCH_CHECK(value.dim() == 2 && value.is_contiguous() && value.scalar_type() == at::kFloat &&
                  value.size(0) == kv_heads && value.size(1) == dim,
              "value must be contiguous float32 [kv_heads, dim]");
  const int64_t heads = qk.size(0) - kv_heads;
  at::Tensor out = at::empty({heads * dim}, qk.options());
  attend_rows({AttentionRow{qk.data_ptr<float>(), value.data_ptr<float>(), kv.data_ptr<float>(),
                            kv.stride(1), kv.stride(0), position, out.data_ptr<float>()}},
              heads, kv_heads, dim, scale);
  return out;
}

at::Tensor decode_attention_rows(const at::Tensor& qkv, const std::vector<at::Tensor>& layer_kv,
                                 const std::vector<int64_t>& positions, int64_t heads,
                                 int64_t kv_heads, double scale) {
  const auto rows = static_cast<int64_t>(layer_kv.size());
  TORCH_CHECK(static_cast<int64_t>(positions.size()) == rows && qkv.dim() == 2 &&
                  qkv.size(0) == rows && qkv.is_contiguous() && qkv.scalar_type() == at::kFloat &&
                  heads > 0 && kv_heads > 0 && heads % kv_heads == 0 &&
                  qkv.size(1) % (heads + 2 * kv_heads) == 0,
              "qkv must be contiguous float32 [rows, (heads + 2 kv_heads) * dim], one KV and "
              "position a row");
  const int64_t dim = qkv.size(1) / (heads + 2 * kv_heads);
  at::Tensor out = at::empty({rows, heads * dim}, qkv.options());
  std::vector<AttentionRow> work;
  for (int64_t r = 0; r < rows; ++r) {
    const at::Tensor& kv = layer_kv[r];
    check_kv(kv, positions[r]);
    TORCH_CHECK(kv.size(1) == kv_heads && kv.size(3) == dim, "row ", r,
                "'s KV does not have the queries' heads and size");
    const float* row = qkv.data_ptr<float>() + r * qkv.size(1);
    work.push_back(AttentionRow{row, row + (heads + kv_heads) * dim, kv.data_ptr<float>(),
                                kv.stride(1), kv.stride(0), positions[r],
                                out.data_ptr<float>() + r * heads * dim});
  }
  attend_rows(work, heads, kv_heads, dim, scale);
  return out;
}

}  // namespace promptcache

TORCH_LIBRARY(promptcache_blocks, m) {
  m.def("q4_1_linear(Tensor x, Tensor nibbles, Tensor scales, Tensor mins, int out_features) -> Tensor");
  m.def("q8_0_linear(Tensor x, Tensor values, Tensor scales, int out_features) -> Tensor");
  m.def("decode_attention(Tensor qk, Tensor value, Tensor(a!) kv, int position, float scale) -> Tensor");
  m.def(
      "decode_attention_rows(Tensor qkv, Tensor(a!)[] layer_kv, int[] positions, int heads, "
      "int kv_heads, float scale) -> Tensor");
  m.def("kernel_isa(str requested) -> str", &kernel_isa);
}

TORCH_LIBRARY_IMPL(promptcache_blocks, CPU, m) {
  m.impl("q4_1_linear", &promptcache::q4_1_linear);
  m.impl("q8_0_linear", &promptcache::q8_0_linear);
  m.impl("decode_attention", &promptcache::decode_attention);
  m.impl("decode_attention_rows", &promptcache::decode_attention_rows);
}
