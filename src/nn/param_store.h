#pragma once
// Parameters and their gradients live in two flat buffers with named views,
// so zero-grad is one memset, the optimizer one loop, a future all-reduce or
// gradient quantizer one call, and a checkpoint one pass over the list.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace sparta {

struct ParamInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;   // in floats, into data() and grad()
  int64_t numel = 0;
  bool decay = false;   // AdamW weight decay applies (2-D weights, not LayerNorm/bias)
};

class ParamStore {
 public:
  // Declare parameters in order, then finalize() allocates both buffers
  // (zero-filled). Offsets are 16-float aligned so every view is 64-byte aligned.
  void declare(const std::string& name, const Shape& shape, bool decay);
  void finalize();

  int64_t size() const { return size_; }  // floats, including alignment padding
  int64_t count() const;                   // real parameters, without padding
  // Mutable access counts as a change of the weights (version() moves on),
  // so 16-bit weight copies made from them know when to refresh.
  float* data() {
    ++version_;
    return data_.data<float>();
  }
  const float* data() const { return data_.data<float>(); }
  float* grad() { return grad_.data<float>(); }
  const float* grad() const { return grad_.data<float>(); }
  void zero_grad();
  // Changes each time data() hands out mutable access.
  uint64_t version() const { return version_; }

  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& info(const std::string& name) const;
  float* ptr(const std::string& name) { return data() + info(name).offset; }
  float* grad_ptr(const std::string& name) { return grad() + info(name).offset; }
  Tensor view(const ParamInfo& p) { return Tensor::view(data() + p.offset, p.shape); }
  Tensor grad_view(const ParamInfo& p) { return Tensor::view(grad() + p.offset, p.shape); }

 private:
  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, size_t> index_;
  int64_t size_ = 0;
  Tensor data_, grad_;
  uint64_t version_ = 0;
};

}  // namespace sparta
