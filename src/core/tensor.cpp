#include "core/tensor.h"

#include <cstdint>
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "core/memory.h"

namespace sparta {

int64_t shape_numel(const Shape& s) {
  for (int64_t d : s)
    if (d == 0) return 0;  // empty whatever the other dimensions are (which may be huge)
  int64_t n = 1;
  for (int64_t d : s)
    SPARTA_CHECK(!__builtin_mul_overflow(n, d, &n), "[tensor] shape ", shape_str(s),
                 " has more elements than int64 can count");
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) SPARTA_CHECK(d >= 0, "[tensor] negative dimension in shape ", shape_str(shape));
  Tensor t;
  const int64_t n = shape_numel(shape);
  SPARTA_CHECK(dtype == DType::Q4 || static_cast<uint64_t>(n) <= SIZE_MAX / dtype_size(dtype), "[tensor] shape ",
               shape_str(shape), " ", dtype_name(dtype), " needs more bytes than size_t can count");
  size_t bytes = storage_bytes(dtype, n);
  void* p = tracked_alloc(bytes);
  t.owner_ = std::shared_ptr<void>(p, [bytes](void* q) { tracked_free(q, bytes); });
  t.data_ = p;
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(void* data, const Shape& shape, DType dtype) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  SPARTA_CHECK(shape_numel(shape) == numel(), "[tensor] cannot reshape ", shape_str(shape_), " to ",
               shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

}  // namespace sparta
