// The exact pass of Int4Head (output_head.py) for one row's logits, in one call.
//
// Int4Head finds the tokens whose coarse (quantized-head) logit could still be the
// largest and recomputes those from the float32 head. In torch that was eight
// vocabulary-wide operations and an index_select a row, about as long as the coarse
// product itself on an AVX2 EPYC (SmolLM2: 49,152 logits); here it is two passes over
// the logits and a dot product a candidate. Same rule as the Python it replaces: a
// logit's bound is row_norms * activation, the floor the largest lower bound, and a
// candidate any logit whose upper bound reaches it (the bounds here each one fma,
// so within a rounding of torch's; a NaN among them refines nothing, as there).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "vector_math.h"

namespace promptcache {

// Replace, in place, every logit of `logits` [vocab] that could be the largest with
// its exact value from `exact` [vocab, hidden] and `x` [hidden]; all of them past
// `most_candidates`. Returns how many were recomputed.
int64_t refine_logits(const at::Tensor& logits, const at::Tensor& x, const at::Tensor& row_norms,
                      const at::Tensor& exact, double activation, int64_t most_candidates) {
  TORCH_CHECK(logits.dim() == 1 && logits.is_contiguous() && logits.scalar_type() == at::kFloat,
              "logits must be a contiguous float32 vector");
  const int64_t vocab = logits.size(0);
  TORCH_CHECK(exact.dim() == 2 && exact.size(0) == vocab && exact.is_contiguous() &&
                  exact.scalar_type() == at::kFloat,
              "exact must be a contiguous float32 [vocab, hidden] head");
  const int64_t hidden = exact.size(1);
  TORCH_CHECK(x.dim() == 1 && x.size(0) == hidden && x.is_contiguous() &&
                  x.scalar_type() == at::kFloat,
              "x must be a contiguous float32 [hidden] vector");
  TORCH_CHECK(row_norms.dim() == 1 && row_norms.size(0) == vocab && row_norms.is_contiguous() &&
                  row_norms.scalar_type() == at::kFloat,
              "row_norms must be a contiguous float32 [vocab] vector");
  float* out = logits.data_ptr<float>();
  const float* norms = row_norms.data_ptr<float>();
  const float a = static_cast<float>(activation);
  // The largest lower bound, NaN if any bound is (as torch's max): then no logit
  // compares >= it, and none is recomputed, as in the torch rule.
  const __m256 scale = _mm256_set1_ps(a);
  __m256 top = _mm256_set1_ps(-INFINITY);
  __m256 unordered = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= vocab; j += 8) {
    const __m256 lower = _mm256_fnmadd_ps(_mm256_loadu_ps(norms + j), scale, _mm256_loadu_ps(out + j));
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(lower, lower, _CMP_UNORD_Q));
    top = _mm256_max_ps(top, lower);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  float floor = lanes[0];
  for (float lane : lanes) floor = std::max(floor, lane);
  bool nan = _mm256_movemask_ps(unordered) != 0;
  for (int64_t t = j; t < vocab; ++t) {
    const float lower = std::fma(-norms[t], a, out[t]);
    nan = nan || std::isnan(lower);
    floor = std::max(floor, lower);
  }
  if (nan) return 0;
  std::vector<int64_t> candidates;
  const __m256 threshold = _mm256_set1_ps(floor);
  for (j = 0; j + 8 <= vocab; j += 8) {
    const __m256 upper = _mm256_fmadd_ps(_mm256_loadu_ps(norms + j), scale, _mm256_loadu_ps(out + j));
    for (int mask = _mm256_movemask_ps(_mm256_cmp_ps(upper, threshold, _CMP_GE_OQ)); mask;
         mask &= mask - 1)
      candidates.push_back(j + __builtin_ctz(mask));
  }
  for (; j < vocab; ++j)
    if (std::fma(norms[j], a, out[j]) >= floor) candidates.push_back(j);
  const float* weights = exact.data_ptr<float>();
  const float* v = x.data_ptr<float>();
  if (static_cast<int64_t>(candidates.size()) > most_candidates) {
    for (int64_t j = 0; j < vocab; ++j) out[j] = dot(weights + j * hidden, v, hidden);
    return vocab;
  }
  for (int64_t j : candidates) out[j] = dot(weights + j * hidden, v, hidden);
  return static_cast<int64_t>(candidates.size());
}

// BlockWeight.logit_bounds' activation term for one row x [hidden] of activations that
// the block kernels round to 8-bit blocks of `block`: the Euclidean size of half a
// rounding step an element (a little over), plus the float32 sums' rounding. In
// double, so within a rounding of the float32 torch operations there.
double block_activation_bound(const float* x, int64_t hidden, int64_t block) {
  double steps = 0.0;
  double squares = 0.0;
  for (int64_t start = 0; start < hidden; start += block) {
    float largest = 0.0f;
    for (int64_t i = start; i < std::min(hidden, start + block); ++i) {
      largest = std::max(largest, std::fabs(x[i]));
      squares += static_cast<double>(x[i]) * x[i];
    }
    const double step = largest / 127.0f;
    steps += step * step;
  }
  const double rounding = 0.5 * (1 + std::ldexp(1.0, -10)) * std::sqrt(static_cast<double>(block)) *
                          std::sqrt(steps);
  return rounding + std::ldexp(1.0, -16) * (std::sqrt(squares) + rounding);
}

// refine_logits for every row of logits [rows, vocab] and x [rows, hidden] (float32,
// contiguous), each with its own block_activation_bound: one call a decode step where a
// row's bound was half a dozen torch operations. Returns the logits recomputed in all.
int64_t refine_block_logits(const at::Tensor& logits, const at::Tensor& x,
                            const at::Tensor& row_norms, const at::Tensor& exact, int64_t block,
                            int64_t most_candidates) {
  TORCH_CHECK(logits.dim() == 2 && x.dim() == 2 && logits.size(0) == x.size(0) &&
                  x.is_contiguous() && x.scalar_type() == at::kFloat && block > 0,
              "logits [rows, vocab] and contiguous float32 x [rows, hidden], one row each");
  int64_t recomputed = 0;
  for (int64_t row = 0; row < logits.size(0); ++row) {
    const at::Tensor activations = x[row];
    const double bound = block_activation_bound(activations.data_ptr<float>(), x.size(1), block);
    recomputed += refine_logits(logits[row], activations, row_norms, exact, bound, most_candidates);
  }
  return recomputed;
}

}  // namespace promptcache

TORCH_LIBRARY_FRAGMENT(promptcache_blocks, m) {
  m.def("refine_logits(Tensor(a!) logits, Tensor x, Tensor row_norms, Tensor exact, "
        "float activation, int most_candidates) -> int");
  m.def("refine_block_logits(Tensor(a!) logits, Tensor x, Tensor row_norms, Tensor exact, "
        "int block, int most_candidates) -> int");
}

TORCH_LIBRARY_IMPL(promptcache_blocks, CPU, m) {
  m.impl("refine_logits", &promptcache::refine_logits);
  m.impl("refine_block_logits", &promptcache::refine_block_logits);
}
