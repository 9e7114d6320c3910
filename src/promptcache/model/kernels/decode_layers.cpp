// A decode step's decoder layers in one call, for a model whose decode matrices are
// all GGUF blocks, over float32 KV buffers (LayerMath.decode_rows is the same maths).
//
// Why: around its five kernel calls, a decode layer in Python dispatches some twenty
// small torch operations (norms, RoPE, views, residual adds, SiLU). On an AVX2 EPYC
// that was about a third of the model thread's time in a step (py-spy while
// serving), serial, with the kernels' helper threads idle meanwhile. Here all of it
// is one call per step from Python.
//
// Numbers: the products and the attention are the same kernels as on the Python
// path. The norms, RoPE, SiLU and residual adds are float32 in a fixed order per
// row, so a row's result depends only on its own token, position and KV: a batched
// step gives each sequence bitwise what it gets alone, and a cache hit decodes as a
// miss does. They are not bitwise torch's (its norm sums in another order), only
// within float32 rounding of it.

#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "block_ops.h"
#include "vector_math.h"

namespace promptcache {
namespace {

constexpr int64_t kTensorsPerLayer = 18;  // the norms, then 4 (data, scales, mins, bias) x 4
constexpr int64_t kBlock = 32;

// out += addend, element by element, on this thread. Not at::add_: past 32k elements (a
// prompt chunk's rows) that is an OpenMP region, whose team then spins for milliseconds
// on the cores the kernels' own helpers (work_share.cpp) need: a third of a 512-row
// chunk's time went to libgomp's spin. `addend` is [cols] (a bias, every row) or out's shape.
void add_in_place(at::Tensor& out, const at::Tensor& addend) {
  float* o = out.data_ptr<float>();
  const float* a = addend.data_ptr<float>();
  const int64_t total = out.numel();
  const int64_t period = addend.numel();
  for (int64_t start = 0; start < total; start += period)
    for (int64_t i = 0; i < period; ++i) o[start + i] += a[i];
}

// One of a layer's projections: GGUF blocks (minimums for Q4_1 only) and an optional bias.
struct Projection {
  at::Tensor data;
  at::Tensor scales;
  at::Tensor mins;  // undefined: Q8_0
  at::Tensor bias;  // undefined: none
  int64_t out_features = 0;

  at::Tensor apply(const at::Tensor& x) const {
    at::Tensor out = mins.defined() ? q4_1_linear(x, data, scales, mins, out_features)
                                    : q8_0_linear(x, data, scales, out_features);
    if (bias.defined()) add_in_place(out, bias);
    return out;
  }
};

struct Layer {
  at::Tensor input_norm;  // float32 [hidden]
  at::Tensor post_norm;
  Projection qkv;
  Projection o;
  Projection gate_up;
  Projection down;
};

float sum_of_squares(const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  for (; i < n; ++i) total = std::fma(x[i], x[i], total);
  return total;
}

// RMSNorm of each row of x [rows, hidden] times `weight`.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, float eps) {
  const int64_t rows = x.size(0);
  const int64_t hidden = x.size(1);
  at::Tensor out = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  float* result = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = in + r * hidden;
    const float mean_square = eps + sum_of_squares(v, hidden) / static_cast<float>(hidden);
    const float inverse = 1.0f / std::sqrt(mean_square);
    for (int64_t i = 0; i < hidden; ++i) result[r * hidden + i] = v[i] * inverse * w[i];
  }
  return out;
}

// RoPE, in place, on the first `heads` heads of each row of qkv [rows, width]:
// x cos + roll(x, dim / 2) sin, with cos and sin [rows, dim] (rope.py negates the
// first half of sin, so the roll is rotate_half).
void rotate(at::Tensor& qkv, int64_t heads, int64_t dim, const float* cos, const float* sin) {
  const int64_t rows = qkv.size(0);
  const int64_t width = qkv.size(1);
  const int64_t half = dim / 2;
  float* base = qkv.data_ptr<float>();
  std::vector<float> original(dim);
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos + r * dim;
    const float* s = sin + r * dim;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = base + r * width + h * dim;
      std::copy_n(v, dim, original.data());
      const float* x = original.data();
      // Each half against the other: the same product and sum per element whichever
      // path (8 lanes, or one at a time for a half not a multiple of 8).
      for (int64_t start : {int64_t{0}, half}) {
        const int64_t other = start == 0 ? half : 0;
        int64_t i = 0;
        for (; i + 8 <= half; i += 8)
          _mm256_storeu_ps(v + start + i,
                           _mm256_fmadd_ps(_mm256_loadu_ps(x + start + i), _mm256_loadu_ps(c + start + i),
                                           _mm256_mul_ps(_mm256_loadu_ps(x + other + i),
                                                         _mm256_loadu_ps(s + start + i))));
        for (; i < half; ++i)
          v[start + i] = std::fma(x[start + i], c[start + i], x[other + i] * s[start + i]);
      }
    }
  }
}

// SiLU(gate) * up for gate_up [rows, 2 * intermediate] (gate first, as fused). Eight
// lanes at a time (a scalar exp a weight was a tenth of a batched step); the tail
// through the same vector code, padded.
at::Tensor silu_times_up(const at::Tensor& gate_up, int64_t intermediate) {
  const int64_t rows = gate_up.size(0);
  at::Tensor out = at::empty({rows, intermediate}, gate_up.options());
  const float* in = gate_up.data_ptr<float>();
  float* result = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = in + r * 2 * intermediate;
    const float* up = gate + intermediate;
    float* o = result + r * intermediate;
    int64_t i = 0;
    for (; i + 8 <= intermediate; i += 8)
      _mm256_storeu_ps(o + i, _mm256_mul_ps(silu(_mm256_loadu_ps(gate + i)), _mm256_loadu_ps(up + i)));
    if (i < intermediate) {
      alignas(32) float g[8] = {};
      alignas(32) float u[8] = {};
      std::copy(gate + i, gate + intermediate, g);
      std::copy(up + i, up + intermediate, u);
      _mm256_store_ps(g, _mm256_mul_ps(silu(_mm256_load_ps(g)), _mm256_load_ps(u)));
      std::copy_n(g, intermediate - i, o + i);
    }
  }
  return out;
}

at::Tensor float_vector(const std::optional<at::Tensor>& tensor, int64_t size, const char* what) {
  TORCH_CHECK(tensor.has_value() && tensor->dim() == 1 && tensor->size(0) == size, what,
              " must be a [", size, "] tensor");
  return tensor->to(at::kFloat).contiguous();
}

Projection projection(const std::vector<std::optional<at::Tensor>>& tensors, int64_t first,
                      int64_t out_features, int64_t in_features, const char* what) {
  const std::optional<at::Tensor>& data = tensors[first];
  const std::optional<at::Tensor>& scales = tensors[first + 1];
  // Tiles of 8 rows (block_dot.cpp); the kernels check the rest of the layout.
  TORCH_CHECK(data.has_value() && scales.has_value() && scales->dim() == 3 &&
                  scales->size(0) == (out_features + 7) / 8 &&
                  scales->size(1) * kBlock == in_features,
              what, " must be a [", out_features, ", ", in_features, "] matrix of GGUF blocks");
  Projection p{*data, *scales, at::Tensor(), at::Tensor(), out_features};
  if (tensors[first + 2].has_value()) p.mins = *tensors[first + 2];
  if (tensors[first + 3].has_value()) p.bias = float_vector(tensors[first + 3], out_features, what);
  return p;
}

}  // namespace

class DecodeLayers : public torch::CustomClassHolder {
 public:
  // `tensors`: kTensorsPerLayer a layer (runtime.py's fused_decode_layers gives the order).
  DecodeLayers(std::vector<std::optional<at::Tensor>> tensors, int64_t hidden, int64_t heads,
               int64_t kv_heads, int64_t head_dim, int64_t intermediate, double eps,
               double scale)
      : hidden_(hidden),
        heads_(heads),
        kv_heads_(kv_heads),
        dim_(head_dim),
        intermediate_(intermediate),
        eps_(static_cast<float>(eps)),
        scale_(scale) {
    TORCH_CHECK(!tensors.empty() && tensors.size() % kTensorsPerLayer == 0,
                "expected ", kTensorsPerLayer, " tensors a layer, got ", tensors.size());
    TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && head_dim % 2 == 0,
                "heads must be a positive multiple of kv_heads, head_dim even");
    const int64_t qkv_width = (heads + 2 * kv_heads) * head_dim;
    for (size_t first = 0; first < tensors.size(); first += kTensorsPerLayer) {
      const auto offset = static_cast<int64_t>(first);
      layers_.push_back(Layer{
          float_vector(tensors[first], hidden, "input_norm"),
          float_vector(tensors[first + 1], hidden, "post_norm"),
          projection(tensors, offset + 2, qkv_width, hidden, "qkv"),
          projection(tensors, offset + 6, hidden, heads * head_dim, "o"),
          projection(tensors, offset + 10, 2 * intermediate, hidden, "gate_up"),
          projection(tensors, offset + 14, hidden, intermediate, "down"),
      });
    }
  }

  // x [rows, hidden] float32, one generated token per row; buffers[r] is row r's KV
  // [layers, 2, kv_heads, capacity, head_dim] (float32), written at positions[r];
  // cos and sin [rows, 1, head_dim]. The hidden states after every layer.
  at::Tensor forward(const at::Tensor& input, const std::vector<at::Tensor>& buffers,
                     const std::vector<int64_t>& positions, const at::Tensor& cos,
                     const at::Tensor& sin) const {
    TORCH_CHECK(input.dim() == 2 && input.size(1) == hidden_ && input.scalar_type() == at::kFloat,
                "x must be float32 [rows, ", hidden_, "]");
    const int64_t rows = input.size(0);
    TORCH_CHECK(static_cast<int64_t>(buffers.size()) == rows &&
                    static_cast<int64_t>(positions.size()) == rows,
                "one KV buffer and one position a row");
    const auto layers = static_cast<int64_t>(layers_.size());
    for (const at::Tensor& kv : buffers)
      TORCH_CHECK(kv.dim() == 5 && kv.scalar_type() == at::kFloat && kv.size(0) == layers &&
                      kv.size(1) == 2 && kv.size(2) == kv_heads_ && kv.size(4) == dim_,
                  "each KV buffer must be float32 [", layers, ", 2, ", kv_heads_,
                  ", capacity, ", dim_, "]");
    const at::Tensor c = cos.to(at::kFloat).contiguous();
    const at::Tensor s = sin.to(at::kFloat).contiguous();
    TORCH_CHECK(c.numel() == rows * dim_ && s.numel() == rows * dim_,
                "cos and sin must hold [rows, 1, ", dim_, "]");
    at::Tensor x = input.contiguous();
    for (int64_t number = 0; number < layers; ++number) {
      const Layer& layer = layers_[number];
      at::Tensor qkv = layer.qkv.apply(rms_norm(x, layer.input_norm, eps_));
      rotate(qkv, heads_ + kv_heads_, dim_, c.data_ptr<float>(), s.data_ptr<float>());
      std::vector<at::Tensor> layer_kv;
      layer_kv.reserve(rows);
      for (const at::Tensor& kv : buffers) layer_kv.push_back(kv.select(0, number));
      const at::Tensor attention =
          decode_attention_rows(qkv, layer_kv, positions, heads_, kv_heads_, scale_);
      at::Tensor attended = layer.o.apply(attention);
      add_in_place(attended, x);
      x = attended;
      const at::Tensor gate_up = layer.gate_up.apply(rms_norm(x, layer.post_norm, eps_));
      at::Tensor down = layer.down.apply(silu_times_up(gate_up, intermediate_));
      add_in_place(down, x);
      x = down;
    }
    return x;
  }

 private:
  std::vector<Layer> layers_;
  int64_t hidden_;
  int64_t heads_;
  int64_t kv_heads_;
  int64_t dim_;
  int64_t intermediate_;
  float eps_;
  double scale_;
};

}  // namespace promptcache

TORCH_LIBRARY_FRAGMENT(promptcache_blocks, m) {
  m.class_<promptcache::DecodeLayers>("DecodeLayers")
      .def(torch::init<std::vector<std::optional<at::Tensor>>, int64_t, int64_t, int64_t,
                       int64_t, int64_t, double, double>())
      .def("forward", &promptcache::DecodeLayers::forward);
}
