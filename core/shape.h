// Shape and strides: a small fixed-capacity vector (tensors have at most 8 dims), so views never allocate.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <vector>
#include "core/error.h"
#include "kernels/common/view.h"

namespace loom {

constexpr int kMaxDims = kernels::kMaxDims;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) { for (int64_t d : dims) push_back(d); }
  explicit Shape(const std::vector<int64_t>& dims) { for (int64_t d : dims) push_back(d); }
  template <class It> Shape(It first, It last) { for (; first != last; ++first) push_back(*first); }

  int size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int64_t& operator[](int i) { return d_[i]; }
  int64_t operator[](int i) const { return d_[i]; }
  int64_t back() const { return d_[n_ - 1]; }
  const int64_t* begin() const { return d_.data(); }
  const int64_t* end() const { return d_.data() + n_; }
  int64_t* begin() { return d_.data(); }
  int64_t* end() { return d_.data() + n_; }
  const int64_t* data() const { return d_.data(); }
  void push_back(int64_t v) {
    LOOM_CHECK(n_ < kMaxDims, "tensors have at most ", kMaxDims, " dims");
    d_[n_++] = v;
  }
  void insert(int pos, int64_t v) {
    push_back(0);
    for (int i = n_ - 1; i > pos; --i) d_[i] = d_[i - 1];
    d_[pos] = v;
  }
  void erase(int pos) { for (int i = pos; i + 1 < n_; ++i) d_[i] = d_[i + 1]; --n_; }
  int64_t numel() const { int64_t p = 1; for (int i = 0; i < n_; ++i) p *= d_[i]; return p; }
  std::vector<int64_t> vec() const { return {begin(), end()}; }
  friend bool operator==(const Shape& a, const Shape& b) {
    return a.n_ == b.n_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend std::ostream& operator<<(std::ostream& os, const Shape& s) {
    os << '[';
    for (int i = 0; i < s.n_; ++i) os << (i ? "," : "") << s.d_[i];
    return os << ']';
  }

 private:
  std::array<int64_t, kMaxDims> d_{};
  int n_ = 0;
};

// Row-major strides of a shape.
inline Shape contiguous_strides(const Shape& shape) {
  Shape s = shape;
  int64_t acc = 1;
  for (int i = shape.size() - 1; i >= 0; --i) { s[i] = acc; acc *= shape[i]; }
  return s;
}

}  // namespace loom
