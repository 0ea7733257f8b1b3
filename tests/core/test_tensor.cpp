// Tensor basics: creation, dtype conversions (bf16/f16 rounding, subnormals, inf/NaN), views and their
// strides, storage sharing, contiguous()/reshape copying only when needed, and errors for bad views.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"

using namespace loom;
namespace ops = loom::ops;

namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<double> iota_values(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0.0);
  return v;
}
// 0, 1, 2, ... in f64, row-major in `shape`.
Tensor iota(const Shape& shape, DType dt = DType::f64) { return Tensor::from(iota_values(shape.numel()), shape, dt); }

std::vector<double> through(const std::vector<double>& v, DType dt) {
  return Tensor::from(v, Shape{int64_t(v.size())}, DType::f64).to(dt).to(DType::f64).to_vector<double>();
}

// Compares with NaN == NaN and the sign of zero.
void expect_same_values(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << i << ": " << got[i];
    } else {
      EXPECT_EQ(got[i], want[i]) << i;
      EXPECT_EQ(std::signbit(got[i]), std::signbit(want[i])) << i;
    }
  }
}

// ============================================================================================
// Creation and metadata
// ============================================================================================

TEST(TensorCreate, ZerosOnesFullScalarArange) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.dtype(), DType::f32);
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dim(), 2);
  EXPECT_EQ(z.to_vector<double>(), std::vector<double>(6, 0.0));
  EXPECT_EQ(Tensor::ones({4}, DType::f64).to_vector<double>(), std::vector<double>(4, 1.0));
  EXPECT_EQ(Tensor::full({2, 2}, -1.5, DType::bf16).to_vector<double>(), std::vector<double>(4, -1.5));
  Tensor s = Tensor::scalar(2.5, DType::f64);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item<double>(), 2.5);
  Tensor a = Tensor::arange(5);
  EXPECT_EQ(a.dtype(), DType::i64);
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Tensor::arange(3, DType::f32).to_vector<float>(), (std::vector<float>{0, 1, 2}));
}

TEST(TensorCreate, FromKeepsRowMajorOrderAndConverts) {
  Tensor t = Tensor::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
  EXPECT_EQ(t.data_ptr<float>()[4], 5.0f);
  Tensor d = Tensor::from(std::vector<int64_t>{7, -8}, {2}, DType::f64);
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{7, -8}));
}

TEST(TensorCreate, FromWithWrongCountThrows) {
  EXPECT_THROW(Tensor::from(std::vector<double>{1, 2, 3}, {2, 2}), loom::Error);
}

TEST(TensorMeta, DescribeWrapDimItem) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_EQ(t.describe(), "f32[2,3]");
  EXPECT_EQ(Tensor::zeros({4}, DType::i64).describe(), "i64[4]");
  EXPECT_EQ(t.wrap_dim(-1), 1);
  EXPECT_EQ(t.wrap_dim(-2), 0);
  EXPECT_EQ(t.wrap_dim(1), 1);
  EXPECT_EQ(t.size(-1), 3);
  EXPECT_THROW(t.wrap_dim(2), loom::Error);
  EXPECT_THROW(t.wrap_dim(-3), loom::Error);
  EXPECT_THROW(t.item<double>(), loom::Error);
  EXPECT_EQ(Tensor::full({1, 1}, 4.0).item<double>(), 4.0);
}

TEST(TensorMeta, UndefinedTensorThrowsOnUse) {
  Tensor u;
  EXPECT_FALSE(u.defined());
  EXPECT_THROW((void)u.shape(), loom::Error);
}

TEST(TensorMeta, DataPtrWrongDtypeThrows) {
  Tensor t = Tensor::zeros({3}, DType::f32);
  EXPECT_NO_THROW(t.data_ptr<float>());
  EXPECT_THROW(t.data_ptr<double>(), loom::OpError);
  EXPECT_THROW(t.data_ptr<int64_t>(), loom::OpError);
}

// ============================================================================================
// Dtype conversions
// ============================================================================================

TEST(DTypeConvert, Bf16RepresentableValuesRoundTrip) {
  std::vector<double> v = {0.0, 1.0, -2.5, 3.140625, 0.5, -0.375, 256.0, 1.0 / 1024, 65280.0, -7.0};
  expect_same_values(through(v, DType::bf16), v);
}

TEST(DTypeConvert, Bf16RoundsToNearestEven) {
  const double u = std::ldexp(1.0, -8);  // half an ulp of bf16 at 1.0
  std::vector<double> in = {1 + u, 1 + 3 * u, 1 + u + std::ldexp(1.0, -20), 1 + u - std::ldexp(1.0, -20),
                            -(1 + 3 * u), 3.14159265358979, 0.1};
  std::vector<double> want = {1.0, 1 + 4 * u, 1 + 2 * u, 1.0, -(1 + 4 * u), 3.140625, 0.10009765625};
  expect_same_values(through(in, DType::bf16), want);
}

TEST(DTypeConvert, Bf16SpecialValues) {
  std::vector<double> in = {kInf, -kInf, kNaN, -0.0, double(FLT_MAX)};
  std::vector<double> want = {kInf, -kInf, kNaN, -0.0, kInf};  // FLT_MAX rounds up past bf16's largest
  expect_same_values(through(in, DType::bf16), want);
}

TEST(DTypeConvert, F16RoundsToNearestEven) {
  const double u = std::ldexp(1.0, -11);  // half an ulp of f16 at 1.0
  std::vector<double> in = {1.0, -2.5, 1 + u, 1 + 3 * u, 1 + u + std::ldexp(1.0, -20), 65504.0, 65519.0, 0.1};
  std::vector<double> want = {1.0, -2.5, 1.0, 1 + 4 * u, 1 + 2 * u, 65504.0, 65504.0, 0.0999755859375};
  expect_same_values(through(in, DType::f16), want);
}

TEST(DTypeConvert, F16OverflowAndSpecials) {
  std::vector<double> in = {65520.0, -1e6, kInf, -kInf, kNaN, -0.0};
  std::vector<double> want = {kInf, -kInf, kInf, -kInf, kNaN, -0.0};
  expect_same_values(through(in, DType::f16), want);
}

TEST(DTypeConvert, F16Subnormals) {
  const double tiny = std::ldexp(1.0, -24);  // smallest f16 subnormal
  std::vector<double> in = {tiny, 1023 * tiny, std::ldexp(1.0, -14), tiny / 2, 3 * tiny / 2, 6e-5, 1e-8, -5 * tiny};
  std::vector<double> want = {tiny,          1023 * tiny, std::ldexp(1.0, -14), 0.0,
                              2 * tiny,      std::round(6e-5 / tiny) * tiny, 0.0, -5 * tiny};
  expect_same_values(through(in, DType::f16), want);
}

TEST(DTypeConvert, F32AndF64RoundTrips) {
  std::vector<double> v = {1.0, -0.1, 1e-30, 3e38, kInf, kNaN};
  std::vector<double> want;
  for (double x : v) want.push_back(double(float(x)));
  expect_same_values(through(v, DType::f32), want);
  std::vector<float> f = {1.5f, -0.1f, 1e-38f, 3.4e38f};
  Tensor t = Tensor::from(f, {4});
  EXPECT_EQ(t.to(DType::f64).to(DType::f32).to_vector<float>(), f);
}

TEST(DTypeConvert, IntegersAndBool) {
  std::vector<int64_t> big = {0, -1, 1LL << 40, -(1LL << 50), 123456789};
  Tensor t = Tensor::from(big, {5});
  EXPECT_EQ(t.to(DType::f64).to(DType::i64).to_vector<int64_t>(), big);
  // float -> int truncates toward zero (as a C++ cast and PyTorch do)
  EXPECT_EQ(Tensor::from(std::vector<double>{1.7, -1.7, 2.0, -0.2}, {4}).to(DType::i64).to_vector<int64_t>(),
            (std::vector<int64_t>{1, -1, 2, 0}));
  // anything non-zero is true
  Tensor b = Tensor::from(std::vector<double>{0.0, 2.5, -1.0, 0.0}, {4}).to(DType::boolean);
  EXPECT_EQ(b.dtype(), DType::boolean);
  EXPECT_EQ(b.to_vector<double>(), (std::vector<double>{0, 1, 1, 0}));
  EXPECT_EQ(b.to(DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 1, 0}));
  EXPECT_EQ(Tensor::from(std::vector<int64_t>{3, 0}, {2}).to(DType::u8).to_vector<uint8_t>(),
            (std::vector<uint8_t>{3, 0}));
}

TEST(DTypeConvert, ConvertingAViewConvertsItsLogicalOrder) {
  Tensor t = iota({2, 3}).transpose(0, 1);  // [[0,3],[1,4],[2,5]]
  Tensor h = t.to(DType::bf16);
  EXPECT_EQ(h.shape(), (Shape{3, 2}));
  EXPECT_EQ(h.to_vector<double>(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

// ============================================================================================
// Views: strides, offsets, shared storage
// ============================================================================================

TEST(TensorView, ContiguousStrides) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.offset(), 0);
  EXPECT_TRUE(t.is_contiguous());
}

TEST(TensorView, PermuteAndTransposeStrides) {
  Tensor t = Tensor::zeros({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.strides(), (Shape{1, 12, 4}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_TRUE(p.same_storage(t));
  Tensor tr = t.transpose(0, 1);
  EXPECT_EQ(tr.shape(), (Shape{3, 2, 4}));
  EXPECT_EQ(tr.strides(), (Shape{4, 12, 1}));
  Tensor tr2 = t.transpose(-1, -2);
  EXPECT_EQ(tr2.shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(tr2.strides(), (Shape{12, 1, 4}));
  EXPECT_TRUE(tr2.transpose(1, 2).is_contiguous());
}

TEST(TensorView, NarrowSliceSelectOffsets) {
  Tensor t = iota({4, 5});
  Tensor n = t.narrow(1, 1, 3);
  EXPECT_EQ(n.shape(), (Shape{4, 3}));
  EXPECT_EQ(n.strides(), (Shape{5, 1}));
  EXPECT_EQ(n.offset(), 1);
  EXPECT_FALSE(n.is_contiguous());
  EXPECT_EQ(n.to_vector<double>(), (std::vector<double>{1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18}));
  Tensor r = t.narrow(0, 2, 2);
  EXPECT_EQ(r.offset(), 10);
  EXPECT_TRUE(r.is_contiguous());
  EXPECT_EQ(r.to_vector<double>(), (std::vector<double>{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}));
  Tensor s = t.slice(0, 1, 4, 2);
  EXPECT_EQ(s.shape(), (Shape{2, 5}));
  EXPECT_EQ(s.strides(), (Shape{10, 1}));
  EXPECT_EQ(s.offset(), 5);
  Tensor s2 = t.slice(1, 0, 5, 2);
  EXPECT_EQ(s2.shape(), (Shape{4, 3}));
  EXPECT_EQ(s2.strides(), (Shape{5, 2}));
  EXPECT_EQ(s2.to_vector<double>(), (std::vector<double>{0, 2, 4, 5, 7, 9, 10, 12, 14, 15, 17, 19}));
  Tensor sel = t.select(1, 2);
  EXPECT_EQ(sel.shape(), (Shape{4}));
  EXPECT_EQ(sel.strides(), (Shape{5}));
  EXPECT_EQ(sel.offset(), 2);
  EXPECT_EQ(sel.to_vector<double>(), (std::vector<double>{2, 7, 12, 17}));
  // views of views accumulate offsets
  EXPECT_EQ(t.narrow(0, 1, 3).narrow(1, 2, 2).offset(), 7);
}

TEST(TensorView, ExpandHasZeroStrides) {
  Tensor t = Tensor::from(std::vector<double>{1, 2, 3}, {3, 1});
  Tensor e = t.expand({3, 4});
  EXPECT_EQ(e.shape(), (Shape{3, 4}));
  EXPECT_EQ(e.strides()[1], 0);
  EXPECT_EQ(e.strides()[0], 1);
  EXPECT_FALSE(e.is_contiguous());
  EXPECT_TRUE(e.same_storage(t));
  EXPECT_EQ(e.to_vector<double>(), (std::vector<double>{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}));
  Tensor k = Tensor::zeros({1, 3, 1}).expand({2, -1, 5});
  EXPECT_EQ(k.shape(), (Shape{2, 3, 5}));
  EXPECT_EQ(k.strides()[0], 0);
  EXPECT_EQ(k.strides()[2], 0);
}

TEST(TensorView, SqueezeUnsqueezeFlatten) {
  Tensor t = Tensor::zeros({3, 1, 4});
  EXPECT_EQ(t.squeeze(1).shape(), (Shape{3, 4}));
  EXPECT_TRUE(t.squeeze(1).same_storage(t));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 3, 1, 4}));
  EXPECT_EQ(t.unsqueeze(3).shape(), (Shape{3, 1, 4, 1}));
  EXPECT_EQ(Tensor::zeros({2, 3, 4}).flatten().shape(), (Shape{24}));
  EXPECT_EQ(Tensor::zeros({2, 3, 4}).flatten(1).shape(), (Shape{2, 12}));
  EXPECT_EQ(Tensor::zeros({2, 3, 4}).flatten(0, 1).shape(), (Shape{6, 4}));
}

TEST(TensorView, ViewsShareStorageWritesVisibleInBase) {
  Tensor base = iota({3, 4});
  Tensor v = base.view({4, 3});
  EXPECT_TRUE(v.same_storage(base));
  // fill_ through a narrow view
  base.narrow(0, 1, 1).fill_(-1.0);
  EXPECT_EQ(base.to_vector<double>(), (std::vector<double>{0, 1, 2, 3, -1, -1, -1, -1, 8, 9, 10, 11}));
  EXPECT_EQ(v.to_vector<double>()[4], -1.0);  // the other view sees it too
  // copy_ through a transposed view
  Tensor tr = base.transpose(0, 1);  // [4, 3]
  tr.select(0, 0).copy_(Tensor::from(std::vector<double>{100, 200, 300}, {3}));
  EXPECT_EQ(base.select(1, 0).to_vector<double>(), (std::vector<double>{100, 200, 300}));
  // raw pointer writes through a select view land in the base
  Tensor row = base.select(0, 2);
  row.data_ptr<double>()[1] = 42.0;
  EXPECT_EQ(base.to_vector<double>()[9], 42.0);
}

TEST(TensorView, DetachSharesCloneCopies) {
  Tensor base = iota({2, 2});
  Tensor d = base.detach();
  EXPECT_TRUE(d.same_storage(base));
  EXPECT_FALSE(d.requires_grad());
  Tensor c = base.clone();
  EXPECT_FALSE(c.same_storage(base));
  c.fill_(5.0);
  EXPECT_EQ(base.to_vector<double>(), (std::vector<double>{0, 1, 2, 3}));
}

TEST(TensorView, MakeViewBuildsGeometry) {
  Tensor base = iota({6});
  Tensor v = make_view(base, {2, 2}, {1, 2}, 1);  // [[1,3],[2,4]]
  EXPECT_TRUE(v.same_storage(base));
  EXPECT_EQ(v.to_vector<double>(), (std::vector<double>{1, 3, 2, 4}));
}

// ============================================================================================
// contiguous() and reshape(): copy only when they must
// ============================================================================================

TEST(TensorCopy, ContiguousIsIdentityWhenAlreadyContiguous) {
  Tensor t = iota({3, 4});
  Tensor c = t.contiguous();
  EXPECT_EQ(c.impl_ptr(), t.impl_ptr());
  Tensor r = t.narrow(0, 1, 2);  // contiguous with an offset
  EXPECT_TRUE(r.contiguous().same_storage(t));
}

TEST(TensorCopy, ContiguousCopiesAStridedView) {
  Tensor t = iota({3, 4});
  Tensor tr = t.transpose(0, 1);
  Tensor c = tr.contiguous();
  EXPECT_FALSE(c.same_storage(t));
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.strides(), (Shape{3, 1}));
  EXPECT_EQ(c.to_vector<double>(), tr.to_vector<double>());
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  Tensor e = Tensor::from(std::vector<double>{1, 2}, {2, 1}).expand({2, 3}).contiguous();
  EXPECT_TRUE(e.is_contiguous());
  EXPECT_EQ(e.to_vector<double>(), (std::vector<double>{1, 1, 1, 2, 2, 2}));
}

TEST(TensorCopy, ReshapeViewsWhenPossible) {
  Tensor t = iota({2, 3, 4});
  Tensor r = t.reshape({6, 4});
  EXPECT_TRUE(r.same_storage(t));
  EXPECT_EQ(r.strides(), (Shape{4, 1}));
  Tensor m = t.reshape({-1, 12});
  EXPECT_EQ(m.shape(), (Shape{2, 12}));
  EXPECT_TRUE(m.same_storage(t));
  // a permuted tensor whose merged dims are still adjacent in memory can view
  Tensor p = t.permute({1, 0, 2});  // [3,2,4] strides [4,12,1]
  Tensor q = p.reshape({3, 2, 2, 2});
  EXPECT_TRUE(q.same_storage(t));
  EXPECT_EQ(q.to_vector<double>(), p.to_vector<double>());
}

TEST(TensorCopy, ReshapeOfNonViewableLayoutCopies) {
  Tensor t = iota({3, 4});
  Tensor tr = t.transpose(0, 1);  // [4,3]
  Tensor r = tr.reshape({12});
  EXPECT_FALSE(r.same_storage(t));
  EXPECT_EQ(r.to_vector<double>(), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_THROW(tr.view({12}), loom::Error);  // view never copies
  Tensor r2 = t.narrow(1, 1, 2).reshape({6});
  EXPECT_EQ(r2.to_vector<double>(), (std::vector<double>{1, 2, 5, 6, 9, 10}));
}

TEST(TensorCopy, ToSameDtypeAndOtherDtypeValues) {
  Tensor t = iota({2, 3}, DType::f32);
  Tensor d = t.to(DType::f64);
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_FALSE(d.same_storage(t));
  EXPECT_EQ(d.to_vector<double>(), t.to_vector<double>());
  EXPECT_EQ(t.to(DType::f32).to_vector<double>(), t.to_vector<double>());
}

// ============================================================================================
// In-place helpers
// ============================================================================================

TEST(TensorInPlace, CopyBroadcastsAndConverts) {
  Tensor t = Tensor::zeros({2, 3}, DType::f64);
  t.copy_(Tensor::from(std::vector<float>{1, 2, 3}, {3}));
  EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{1, 2, 3, 1, 2, 3}));
  t.add_(Tensor::ones({2, 3}, DType::f64), 2.0);
  EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{3, 4, 5, 3, 4, 5}));
  t.mul_(0.5);
  EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{1.5, 2, 2.5, 1.5, 2, 2.5}));
  t.zero_();
  EXPECT_EQ(t.to_vector<double>(), std::vector<double>(6, 0.0));
}

// ============================================================================================
// Bad views
// ============================================================================================

TEST(TensorErrors, BadReshape) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_THROW(t.reshape({4, 2}), loom::Error);
  EXPECT_THROW(t.reshape({-1, -1}), loom::Error);
  EXPECT_THROW(t.reshape({-1, 4}), loom::Error);
  EXPECT_THROW(t.view({7}), loom::Error);
}

TEST(TensorErrors, BadNarrowSliceSelect) {
  Tensor t = Tensor::zeros({3, 4});
  EXPECT_THROW(t.narrow(1, 2, 3), loom::Error);
  EXPECT_THROW(t.narrow(1, -1 - 4, 1), loom::Error);
  EXPECT_THROW(t.narrow(2, 0, 1), loom::Error);
  EXPECT_THROW(t.narrow(0, 0, 4), loom::Error);
  EXPECT_THROW(t.select(0, 3), loom::Error);
  EXPECT_THROW(t.slice(0, 0, 2, 0), loom::Error);
}

TEST(TensorErrors, BadPermuteTranspose) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_THROW(t.permute({0, 1}), loom::Error);
  EXPECT_THROW(t.permute({0, 1, 1}), loom::Error);
  EXPECT_THROW(t.permute({0, 1, 3}), loom::Error);
  EXPECT_THROW(t.transpose(0, 3), loom::Error);
}

TEST(TensorErrors, BadExpandSqueezeFlatten) {
  Tensor t = Tensor::zeros({3, 2});
  EXPECT_THROW(t.expand({3, 4}), loom::Error);
  EXPECT_THROW(t.expand({3}), loom::Error);
  EXPECT_THROW(t.squeeze(2), loom::Error);
  EXPECT_THROW(t.unsqueeze(4), loom::Error);
  EXPECT_THROW(Tensor::zeros({2, 3, 4}).flatten(2, 1), loom::Error);
}

// ============================================================================================
// Autograd basics on Tensor
// ============================================================================================

TEST(TensorAutograd, LeafFlagsAndBackward) {
  Tensor x = Tensor::from(std::vector<double>{1, 2, 3}, {3});
  EXPECT_FALSE(x.requires_grad());
  x.set_requires_grad(true);
  EXPECT_TRUE(x.requires_grad());
  EXPECT_TRUE(x.is_leaf());
  Tensor y = ops::sum(ops::mul(x, x));
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(y.requires_grad());
  y.backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 4, 6}));
}

TEST(TensorAutograd, GradientsAccumulateUntilZeroed) {
  Tensor x = Tensor::from(std::vector<double>{1, -1}, {2});
  x.set_requires_grad(true);
  ops::sum(ops::mul(x, 3.0)).backward();
  ops::sum(ops::mul(x, 3.0)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{6, 6}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  ops::sum(x).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 1}));
}

TEST(TensorAutograd, NonScalarBackwardNeedsGradient) {
  Tensor x = Tensor::from(std::vector<double>{1, 2}, {2});
  x.set_requires_grad(true);
  Tensor y = ops::mul(x, 2.0);
  EXPECT_THROW(y.backward(), loom::Error);
  Tensor y2 = ops::mul(x, 2.0);
  y2.backward(Tensor::from(std::vector<double>{1, 10}, {2}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 20}));
}

TEST(TensorAutograd, RetainGraphAllowsSecondBackward) {
  Tensor x = Tensor::from(std::vector<double>{2}, {1});
  x.set_requires_grad(true);
  Tensor y = ops::sum(ops::mul(x, x));
  y.backward(Tensor(), true);
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{8}));
}

TEST(TensorAutograd, GradHookSeesFinalGradientOnce) {
  Tensor x = Tensor::from(std::vector<double>{1, 2}, {2});
  x.set_requires_grad(true);
  int calls = 0;
  std::vector<double> seen;
  x.register_grad_hook([&](const Tensor& g) {
    ++calls;
    seen = g.to_vector<double>();
  });
  // x is used twice; the hook fires once, after both contributions.
  ops::sum(ops::add(ops::mul(x, 2.0), ops::mul(x, x))).backward();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, (std::vector<double>{4, 6}));
}

TEST(TensorAutograd, ViewsAndCopiesAreDifferentiable) {
  Tensor x = iota({2, 3});
  x.set_requires_grad(true);
  Tensor y = x.transpose(0, 1).narrow(0, 1, 2).contiguous().reshape({4}).to(DType::f64).clone();
  EXPECT_TRUE(y.requires_grad());
  ops::sum(ops::mul(y, Tensor::from(std::vector<double>{1, 2, 3, 4}, {4}))).backward();
  // y = [x01, x11, x02, x12]
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 3, 0, 2, 4}));
}

TEST(TensorAutograd, DetachStopsGradient) {
  Tensor x = Tensor::from(std::vector<double>{1, 2}, {2});
  x.set_requires_grad(true);
  Tensor y = ops::mul(x, 2.0).detach();
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

}  // namespace
