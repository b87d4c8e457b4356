#include "nn/param_store.h"

#include <cstring>

#include "core/error.h"

namespace sparta {

void ParamStore::declare(const std::string& name, const Shape& shape, bool decay) {
  SPARTA_CHECK(!data_.defined(), "[params] cannot declare '", name, "' after finalize()");
  SPARTA_CHECK(!index_.count(name), "[params] duplicate parameter name '", name, "'");
  ParamInfo p;
  p.name = name;
  p.shape = shape;
  p.numel = shape_numel(shape);
  p.offset = size_;
  p.decay = decay;
  size_ += (p.numel + 15) / 16 * 16;
  index_[name] = params_.size();
  params_.push_back(std::move(p));
}

void ParamStore::finalize() {
  data_ = Tensor::zeros({size_});
  grad_ = Tensor::zeros({size_});
}

int64_t ParamStore::count() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.numel;
  return n;
}

void ParamStore::zero_grad() { std::memset(grad(), 0, sizeof(float) * static_cast<size_t>(size_)); }

const ParamInfo& ParamStore::info(const std::string& name) const {
  auto it = index_.find(name);
  SPARTA_CHECK(it != index_.end(), "[params] no parameter named '", name, "'");
  return params_[it->second];
}

}  // namespace sparta
