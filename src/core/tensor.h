#pragma once
// A dense, contiguous, row-major tensor: dtype + shape + shared storage.
// Owning tensors allocate through the memory tracker; views wrap memory
// owned elsewhere (e.g. a slice of the flat parameter buffer).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace sparta {

using Shape = std::vector<int64_t>;

// Elements in a tensor of shape `s`: 0 if any dimension is 0, else the
// product; sparta::Error if the product overflows int64.
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "(2, 3, 4)"

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  // Non-owning view of caller memory that must outlive the tensor.
  static Tensor view(void* data, const Shape& shape, DType dtype = DType::F32);

  bool defined() const { return data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return storage_bytes(dtype_, numel()); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }

  // Same storage, new shape with equal numel (throws otherwise).
  Tensor reshape(const Shape& shape) const;
  // Deep copy into a new owning tensor.
  Tensor clone() const;

 private:
  std::shared_ptr<void> owner_;  // null for views
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace sparta
