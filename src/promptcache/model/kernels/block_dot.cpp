// Matrix-vector products straight from a GGUF's Q4_1 / Q8_0 blocks, on AVX2 (or AVX-512 VNNI).
//
// The way llama.cpp computes them (ggml's vec_dot_q4_1_q8_1 / q8_0_q8_0): the
// activations are rounded to signed 8-bit blocks of 32 with one float scale per
// block, and every block's dot product is an exact integer sum
// (maddubs + madd), scaled once in float32. The weights are the GGUF's own: the
// nibbles as stored (two blocks to a 32-byte load: block_weights.py packs
// them) or the bytes as stored, the float16 scales and minimums widened to
// float32 exactly (reading 2 bytes more a block, and saving the conversions:
// the kernels are bound by instructions, not bytes, on an AVX2 EPYC).
//
// Summation order is fixed per (activation row, output row): blocks in order
// into 8 float lanes, then one horizontal sum. It depends neither on how many
// activation rows are multiplied together nor on how output rows are split
// across threads, so a batched decode step gives each sequence bitwise the
// logits it gets alone.

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
#include <string>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kRowTile = 4;  // activation rows per pass over a weight row

// Activation rows as 8-bit blocks: q = round(x / d), d = max|x| / 127 per block,
// and s = d * sum(q) (what a Q4_1 minimum multiplies). A block holding a NaN or
// infinity gets d = NaN, so the outputs it touches are NaN, as in float32.
struct QuantizedRows {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<float> s;
};

QuantizedRows quantize_rows(const float* x, int64_t rows, int64_t cols) {
  const int64_t blocks = cols / kBlock;
  QuantizedRows out{std::vector<int8_t>(rows * cols), std::vector<float>(rows * blocks),
                    std::vector<float>(rows * blocks)};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const float* v = x + r * cols + b * kBlock;
      int8_t* q = out.q.data() + r * cols + b * kBlock;
      float amax = 0.0f;
      bool finite = true;
      for (int64_t i = 0; i < kBlock; ++i) {
        finite = finite && std::isfinite(v[i]);
        amax = std::fmax(amax, std::fabs(v[i]));
      }
      const float d = finite ? amax / 127.0f : NAN;
      // A division, not a multiplication by 1 / d: that inverse overflows for a
      // subnormal d. |v / d| <= 127 always, and ties round to even.
      const bool scaled = finite && d != 0.0f;
      int sum = 0;
      for (int64_t i = 0; i < kBlock; ++i) {
        const int value = scaled ? static_cast<int>(std::nearbyint(v[i] / d)) : 0;
        q[i] = static_cast<int8_t>(value);
        sum += value;
      }
      out.d[r * blocks + b] = d;
      out.s[r * blocks + b] = d * static_cast<float>(sum);
    }
  }
  return out;
}

// Rows ahead whose bytes are asked for before they are needed: a decode step reads
// every weight once, from memory (the matrices are far larger than the caches),
// and the hardware prefetcher alone left the kernel waiting on it.
constexpr int64_t kPrefetchRows = 4;

inline void prefetch(const void* start, int64_t bytes) {
  const char* p = static_cast<const char*>(start);
  for (int64_t offset = 0; offset < bytes; offset += 64) _mm_prefetch(p + offset, _MM_HINT_T0);
}

inline float horizontal_sum(__m256 v) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

// Per (activation row, block): the product of the weight block's scale and the
// activation block's, for one weight row; the main loops broadcast it from here.
inline void block_scales(const float* weight_d, const float* x_d, int64_t blocks, float* out) {
  int64_t b = 0;
  for (; b + 8 <= blocks; b += 8)
    _mm256_storeu_ps(out + b, _mm256_mul_ps(_mm256_loadu_ps(weight_d + b), _mm256_loadu_ps(x_d + b)));
  for (; b < blocks; ++b) out[b] = weight_d[b] * x_d[b];
}

// sum over blocks of minimum * (d * sum(q)): a Q4_1 row's offset term, in fixed order.
inline float offset_term(const float* mins, const float* x_s, int64_t blocks) {
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= blocks; b += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(mins + b), _mm256_loadu_ps(x_s + b), acc);
  float total = horizontal_sum(acc);
  for (; b < blocks; ++b) total = std::fma(mins[b], x_s[b], total);
  return total;
}

inline __m256 block_dot(__m256i unsigned_w, __m256i signed_x, __m256 scale, __m256 acc) {
  const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned_w, signed_x),
                                         _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
}

// Zeroed accumulators and each row's block scales, before a weight row's blocks.
template <int R>
void start_rows(__m256* even, __m256* odd, const float* d, const QuantizedRows& x, int64_t first,
                int64_t blocks, float* scales) {
  for (int r = 0; r < R; ++r) {
    even[r] = _mm256_setzero_ps();
    odd[r] = _mm256_setzero_ps();
    block_scales(d, x.d.data() + (first + r) * blocks, blocks, scales + r * blocks);
  }
}

// After a Q4 row's block pairs (`b` the first block left): the odd last block, if
// any, into the even chains, then each output. Shared by the AVX2 and VNNI rows, so
// both end in the same instructions.
template <int R>
void q4_finish_rows(const uint8_t* nibbles, const float* mins, int64_t blocks, int64_t b,
                    const QuantizedRows& x, int64_t first, int64_t cols, const float* scales,
                    __m256* even, const __m256* odd, float* out, int64_t out_stride) {
  if (b < blocks) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles + b * 16));
    const __m256i q0 = _mm256_and_si256(raw, _mm256_set1_epi8(0x0F));
    for (int r = 0; r < R; ++r) {
      const int8_t* xq = x.q.data() + (first + r) * cols + b * kBlock;
      even[r] = block_dot(q0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)),
                          _mm256_broadcast_ss(scales + r * blocks + b), even[r]);
    }
  }
  for (int r = 0; r < R; ++r)
    out[r * out_stride] = horizontal_sum(_mm256_add_ps(even[r], odd[r])) +
                          offset_term(mins, x.s.data() + (first + r) * blocks, blocks);
}

// One Q8_0 block `b` of a weight row against R activation rows, into `acc`: the AVX2
// rows' every block, the VNNI rows' odd last one.
template <int R>
void q8_block(const int8_t* values, int64_t blocks, int64_t b, const QuantizedRows& x,
              int64_t first, int64_t cols, const float* scales, __m256* acc) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + b * kBlock));
  const __m256i magnitude = _mm256_sign_epi8(w, w);  // |w| as unsigned (-128 -> 128)
  for (int r = 0; r < R; ++r) {
    const __m256i xq = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(x.q.data() + (first + r) * cols + b * kBlock));
    // x * sign(w): each product keeps its sign; |w| * |x| <= 128 * 127 per byte pair.
    acc[r] = block_dot(magnitude, _mm256_sign_epi8(xq, w),
                       _mm256_broadcast_ss(scales + r * blocks + b), acc[r]);
  }
}

// One Q4 weight row against R activation rows. The row's nibbles come in pairs
// of blocks, 32 bytes a pair: byte i holds weight i of the even block in its
// low nibble and weight i of the odd block in its high one (an odd last block
// has zero high nibbles, never read). Even and odd blocks sum into separate
// lanes, two chains instead of one long one.
template <int R>
void q4_row(const uint8_t* nibbles, const float* d, const float* mins, int64_t blocks,
            const QuantizedRows& x, int64_t first, int64_t cols, float* scales, float* out,
            int64_t out_stride) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m256 even[R];
  __m256 odd[R];
  start_rows<R>(even, odd, d, x, first, blocks, scales);
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles + b * 16));
    const __m256i q0 = _mm256_and_si256(raw, low);
    const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
    for (int r = 0; r < R; ++r) {
      const int8_t* xq = x.q.data() + (first + r) * cols + b * kBlock;
      even[r] = block_dot(q0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)),
                          _mm256_broadcast_ss(scales + r * blocks + b), even[r]);
      odd[r] = block_dot(q1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + kBlock)),
                         _mm256_broadcast_ss(scales + r * blocks + b + 1), odd[r]);
    }
  }
  q4_finish_rows<R>(nibbles, mins, blocks, b, x, first, cols, scales, even, odd, out, out_stride);
}

// One Q8_0 weight row (signed bytes in order) against R activation rows.
template <int R>
void q8_row(const int8_t* values, const float* d, int64_t blocks, const QuantizedRows& x,
            int64_t first, int64_t cols, float* scales, float* out, int64_t out_stride) {
  __m256 even[R];
  __m256 odd[R];
  start_rows<R>(even, odd, d, x, first, blocks, scales);
  for (int64_t b = 0; b < blocks; ++b)
    q8_block<R>(values, blocks, b, x, first, cols, scales, (b & 1) ? odd : even);
  for (int r = 0; r < R; ++r) out[r * out_stride] = horizontal_sum(_mm256_add_ps(even[r], odd[r]));
}

// ---- The same rows on AVX-512 VNNI -----------------------------------------------
//
// Where the CPU has it (kernel_isa below), a pair of blocks is one 64-byte register:
// the even block in the low 256 bits, the odd one in the high, and one vpdpbusd
// gives each 32-bit lane the sum of 4 byte products, the value maddubs + madd give
// it on AVX2. The low half accumulates exactly as the AVX2 `even` chain does and
// the high half as `odd`, with the same fma per lane, and the halves are added
// before the same horizontal sum: the results are bitwise the AVX2 ones (tested),
// in about half the instructions a block.

#define PROMPTCACHE_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

// [scale of block b] x 8 in the low half, [scale of block b + 1] x 8 in the high one.
PROMPTCACHE_VNNI inline __m512 pair_scales(const float* scales) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_broadcast_ss(scales)),
                            _mm256_broadcast_ss(scales + 1), 1);
}

PROMPTCACHE_VNNI inline __m512 pair_dot(__m512i unsigned_w, __m512i signed_x, __m512 scale,
                                        __m512 acc) {
  const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), unsigned_w, signed_x);
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc);
}

// The pair accumulator's halves: AVX2's even and odd chains.
PROMPTCACHE_VNNI inline __m256 low_half(__m512 v) { return _mm512_castps512_ps256(v); }
PROMPTCACHE_VNNI inline __m256 high_half(__m512 v) { return _mm512_extractf32x8_ps(v, 1); }

// Zeroed pair accumulators and each row's block scales (start_rows' VNNI form).
template <int R>
PROMPTCACHE_VNNI void start_pairs(__m512* pairs, const float* d, const QuantizedRows& x,
                                  int64_t first, int64_t blocks, float* scales) {
  for (int r = 0; r < R; ++r) {
    pairs[r] = _mm512_setzero_ps();
    block_scales(d, x.d.data() + (first + r) * blocks, blocks, scales + r * blocks);
  }
}

template <int R>
PROMPTCACHE_VNNI void q4_row_vnni(const uint8_t* nibbles, const float* d, const float* mins,
                                  int64_t blocks, const QuantizedRows& x, int64_t first,
                                  int64_t cols, float* scales, float* out, int64_t out_stride) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  // Shift the high 256 bits' copy by 4: the odd block's nibbles come down.
  const __m512i shifts = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
  __m512 pairs[R];
  start_pairs<R>(pairs, d, x, first, blocks, scales);
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const __m512i raw = _mm512_broadcast_i64x4(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles + b * 16)));
    const __m512i w = _mm512_and_si512(_mm512_srlv_epi64(raw, shifts), low);
    for (int r = 0; r < R; ++r) {
      const int8_t* xq = x.q.data() + (first + r) * cols + b * kBlock;
      pairs[r] = pair_dot(w, _mm512_loadu_si512(xq), pair_scales(scales + r * blocks + b),
                          pairs[r]);
    }
  }
  __m256 even[R];
  __m256 odd[R];
  for (int r = 0; r < R; ++r) {
    even[r] = low_half(pairs[r]);
    odd[r] = high_half(pairs[r]);
  }
  q4_finish_rows<R>(nibbles, mins, blocks, b, x, first, cols, scales, even, odd, out, out_stride);
}

template <int R>
PROMPTCACHE_VNNI void q8_row_vnni(const int8_t* values, const float* d, int64_t blocks,
                                  const QuantizedRows& x, int64_t first, int64_t cols,
                                  float* scales, float* out, int64_t out_stride) {
  __m512 pairs[R];
  start_pairs<R>(pairs, d, x, first, blocks, scales);
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const __m512i w = _mm512_loadu_si512(values + b * kBlock);
    const __m512i magnitude = _mm512_abs_epi8(w);  // |w| as unsigned (-128 -> 128)
    const __mmask64 negative = _mm512_movepi8_mask(w);
    for (int r = 0; r < R; ++r) {
      const __m512i xq = _mm512_loadu_si512(x.q.data() + (first + r) * cols + b * kBlock);
      // x * sign(w), as AVX2's sign_epi8 (where w is 0 the product is 0 either way).
      const __m512i signed_x = _mm512_mask_sub_epi8(xq, negative, _mm512_setzero_si512(), xq);
      pairs[r] = pair_dot(magnitude, signed_x, pair_scales(scales + r * blocks + b), pairs[r]);
    }
  }
  __m256 even[R];
  __m256 odd[R];
  for (int r = 0; r < R; ++r) {
    even[r] = low_half(pairs[r]);
    odd[r] = high_half(pairs[r]);
  }
  if (b < blocks) q8_block<R>(values, blocks, b, x, first, cols, scales, even);
  for (int r = 0; r < R; ++r) out[r * out_stride] = horizontal_sum(_mm256_add_ps(even[r], odd[r]));
}

bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}

// Which rows run: AVX-512 VNNI where the CPU has it, else AVX2. Set only by
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

// The matrix's width from its scales (32 weights a scale), after checking them.
int64_t checked_in_features(const at::Tensor& x, const at::Tensor& scales, int64_t out_features) {
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.dim() == 2 &&
                  scales.size(0) == out_features,
              "scales must be contiguous float32 [out_features, in_features / 32]");
  const int64_t in_features = scales.size(1) * kBlock;
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "x must be a contiguous float32 [rows, in_features] tensor");
  TORCH_CHECK(x.size(1) == in_features, "x has ", x.size(1), " columns; the matrix has ",
              in_features);
  return in_features;
}

// Output rows per chunk of a product's work (work_share.h): about eight chunks a thread,
// so a helper that is preempted holds up little, and none for a small product (a chunk
// handed over costs about as much as a few rows).
int64_t rows_per_chunk(int64_t out_features, int64_t threads) {
  constexpr int64_t kFewestRows = 32;
  return std::max(kFewestRows, (out_features + threads * 8 - 1) / (threads * 8));
}

template <typename RowFn>
at::Tensor for_each_output_row(const at::Tensor& x, int64_t out_features, RowFn row_fn) {
  const int64_t rows = x.size(0);
  const int64_t cols = x.size(1);
  at::Tensor out = at::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return out;
  const QuantizedRows quantized = quantize_rows(x.data_ptr<float>(), rows, cols);
  float* result = out.data_ptr<float>();
  const int64_t blocks = cols / kBlock;
  const int64_t threads = at::get_num_threads();
  const int64_t chunk_rows = rows_per_chunk(out_features, threads);
  auto chunk_body = [&](int64_t chunk) {
    thread_local std::vector<float> scales;
    scales.resize(kRowTile * blocks);
    float* s = scales.data();
    const int64_t end = std::min(out_features, (chunk + 1) * chunk_rows);
    for (int64_t n = chunk * chunk_rows; n < end; ++n) {
      int64_t first = 0;
      for (; first + kRowTile <= rows; first += kRowTile)
        row_fn.template operator()<kRowTile>(n, quantized, first, s, result + first * out_features + n);
      switch (rows - first) {
        case 3: row_fn.template operator()<3>(n, quantized, first, s, result + first * out_features + n); break;
        case 2: row_fn.template operator()<2>(n, quantized, first, s, result + first * out_features + n); break;
        case 1: row_fn.template operator()<1>(n, quantized, first, s, result + first * out_features + n); break;
        default: break;
      }
    }
  };
  promptcache::share_chunks((out_features + chunk_rows - 1) / chunk_rows, threads, chunk_body);
  return out;
}

}  // namespace

namespace promptcache {

at::Tensor q4_1_linear(const at::Tensor& x, const at::Tensor& nibbles, const at::Tensor& scales,
                       const at::Tensor& mins) {
  TORCH_CHECK(nibbles.dim() == 2, "nibbles must be [out_features, bytes]");
  const int64_t out_features = nibbles.size(0);
  const int64_t cols = checked_in_features(x, scales, out_features);
  const int64_t blocks = cols / kBlock;
  TORCH_CHECK(nibbles.scalar_type() == at::kByte && nibbles.is_contiguous() && nibbles.dim() == 2 &&
                  nibbles.size(1) == (blocks + 1) / 2 * kBlock,
              "nibbles must be contiguous uint8 [out_features, 32 * ceil(in_features / 64)]");
  TORCH_CHECK(mins.sizes() == scales.sizes() && mins.scalar_type() == at::kFloat &&
                  mins.is_contiguous(),
              "mins must be contiguous float32, shaped as scales");
  const uint8_t* w = nibbles.data_ptr<uint8_t>();
  const float* d = scales.data_ptr<float>();
  const float* m = mins.data_ptr<float>();
  const int64_t row_bytes = nibbles.size(1);
  const bool vnni = use_vnni;
  auto row_fn = [&]<int R>(int64_t n, const QuantizedRows& q, int64_t first, float* buffer,
                           float* out) {
    if (n + kPrefetchRows < out_features) {
      prefetch(w + (n + kPrefetchRows) * row_bytes, row_bytes);
      prefetch(d + (n + kPrefetchRows) * blocks, blocks * 4);
      prefetch(m + (n + kPrefetchRows) * blocks, blocks * 4);
    }
    if (vnni)
      q4_row_vnni<R>(w + n * row_bytes, d + n * blocks, m + n * blocks, blocks, q, first, cols,
                     buffer, out, out_features);
    else
      q4_row<R>(w + n * row_bytes, d + n * blocks, m + n * blocks, blocks, q, first, cols, buffer,
                out, out_features);
  };
  return for_each_output_row(x, out_features, row_fn);
}

at::Tensor q8_0_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scales) {
  TORCH_CHECK(values.dim() == 2, "values must be [out_features, in_features]");
  const int64_t out_features = values.size(0);
  const int64_t cols = checked_in_features(x, scales, out_features);
  TORCH_CHECK(values.scalar_type() == at::kChar && values.is_contiguous() && values.dim() == 2 &&
                  values.size(1) == cols,
              "values must be contiguous int8 [out_features, in_features]");
  const int64_t blocks = cols / kBlock;
  const int8_t* w = values.data_ptr<int8_t>();
  const float* d = scales.data_ptr<float>();
  const bool vnni = use_vnni;
  auto row_fn = [&]<int R>(int64_t n, const QuantizedRows& q, int64_t first, float* buffer,
                           float* out) {
    if (n + kPrefetchRows < out_features) {
      prefetch(w + (n + kPrefetchRows) * cols, cols);
      prefetch(d + (n + kPrefetchRows) * blocks, blocks * 4);
    }
    if (vnni)
      q8_row_vnni<R>(w + n * cols, d + n * blocks, blocks, q, first, cols, buffer, out,
                     out_features);
    else
      q8_row<R>(w + n * cols, d + n * blocks, blocks, q, first, cols, buffer, out, out_features);
  };
  return for_each_output_row(x, out_features, row_fn);
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
  m.def("q4_1_linear(Tensor x, Tensor nibbles, Tensor scales, Tensor mins) -> Tensor");
  m.def("q8_0_linear(Tensor x, Tensor values, Tensor scales) -> Tensor");
  m.def("decode_attention(Tensor qk, Tensor value, Tensor(a!) kv, int position, float scale) -> Tensor");
  m.def("kernel_isa(str requested) -> str", &kernel_isa);
}

TORCH_LIBRARY_IMPL(promptcache_blocks, CPU, m) {
  m.impl("q4_1_linear", &promptcache::q4_1_linear);
  m.impl("q8_0_linear", &promptcache::q8_0_linear);
  m.impl("decode_attention", &promptcache::decode_attention);
}
