// The block kernels' products and attention (block_dot.cpp), for the fused decode
// layers (decode_layers.cpp) to call without a round trip through Python.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace promptcache {

// x [rows, in] float32 times a Q4_1 matrix of `out_features` rows in tiles of 8 (nibbles,
// float16 scales and minimums; block_dot.cpp has the layout).
at::Tensor q4_1_linear(const at::Tensor& x, const at::Tensor& nibbles, const at::Tensor& scales,
                       const at::Tensor& mins, int64_t out_features);

// x [rows, in] float32 times a Q8_0 matrix of `out_features` rows in tiles of 8 (int8
// values, float16 scales).
at::Tensor q8_0_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& scales,
                       int64_t out_features);

// One query's attention over this layer's float32 KV [2, kv_heads, capacity, dim], after
// writing its key and value at `position`; [heads * dim].
at::Tensor decode_attention(const at::Tensor& qk, const at::Tensor& value, const at::Tensor& kv,
                            int64_t position, double scale);

// The attention of a batch's rows in one work-shared call: qkv [rows, (heads + 2 kv_heads)
// * dim] (queries and keys RoPE'd), layer_kv[r] row r's [2, kv_heads, capacity, dim]
// written at positions[r]; [rows, heads * dim].
at::Tensor decode_attention_rows(const at::Tensor& qkv, const std::vector<at::Tensor>& layer_kv,
                                 const std::vector<int64_t>& positions, int64_t heads,
                                 int64_t kv_heads, double scale);

}  // namespace promptcache
