// Contrastive losses against hand-written references (plain loops in double), f64 gradient checks,
// bad-input errors, and clip_loss against the PyTorch fixture of scripts/golden/clip_tiny.py.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/safetensors.h"
#include "losses/contrastive.h"

using namespace loom;

namespace {

using Mat = std::vector<std::vector<double>>;

Mat random_unit_rows(int64_t n, int64_t e, std::mt19937& rng) {
  std::normal_distribution<double> nd;
  Mat m(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(e)));
  for (auto& r : m) {
    double s = 0;
    for (double& x : r) {
      x = nd(rng);
      s += x * x;
    }
    for (double& x : r) x /= std::sqrt(s);
  }
  return m;
}

Tensor to_tensor(const Mat& m, DType dt = DType::f64) {
  std::vector<double> v;
  for (const auto& r : m) v.insert(v.end(), r.begin(), r.end());
  return Tensor::from(v, {int64_t(m.size()), int64_t(m[0].size())}, dt);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Reference InfoNCE: rows of `a` against all rows of `b`; target distribution q[i][j].
double ref_direction(const Mat& a, const Mat& b, double scale, const std::function<double(size_t, size_t)>& q) {
  double total = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<double> l(b.size());
    double mx = -1e300;
    for (size_t j = 0; j < b.size(); ++j) mx = std::max(mx, l[j] = scale * dot(a[i], b[j]));
    double se = 0;
    for (double x : l) se += std::exp(x - mx);
    const double lse = mx + std::log(se);
    for (size_t j = 0; j < b.size(); ++j) total -= q(i, j) * (l[j] - lse);
  }
  return total / double(a.size());
}

double ref_clip(const Mat& il, const Mat& tl, const Mat& ia, const Mat& ta, size_t offset, double log_scale,
                const std::vector<int64_t>* lab_l = nullptr, const std::vector<int64_t>* lab_a = nullptr,
                double max_log = std::log(100.0)) {
  const double scale = std::exp(std::min(log_scale, max_log));
  std::function<double(size_t, size_t)> q = [&](size_t i, size_t j) { return j == offset + i ? 1.0 : 0.0; };
  if (lab_l) {
    q = [&](size_t i, size_t j) {
      double c = 0;
      for (int64_t l : *lab_a) c += l == (*lab_l)[i];
      return (*lab_a)[j] == (*lab_l)[i] ? 1.0 / c : 0.0;
    };
  }
  return 0.5 * (ref_direction(il, ta, scale, q) + ref_direction(tl, ia, scale, q));
}

double ref_triplet(const Mat& im, const Mat& tx, double m) {
  const size_t n = im.size();
  double li = 0, lt = 0;
  for (size_t i = 0; i < n; ++i) {
    double hi = -1e300, ht = -1e300;
    for (size_t j = 0; j < n; ++j) {
      if (j == i) continue;
      hi = std::max(hi, dot(im[i], tx[j]));  // hardest caption for image i
      ht = std::max(ht, dot(im[j], tx[i]));  // hardest image for caption i
    }
    li += std::max(0.0, m + hi - dot(im[i], tx[i]));
    lt += std::max(0.0, m + ht - dot(im[i], tx[i]));
  }
  return li / double(n) + lt / double(n);
}

// Autograd gradient of scalar f() against central differences for every leaf.
void gradient_check(const std::function<Tensor()>& f, const std::vector<Tensor>& leaves, double tol = 1e-6) {
  for (Tensor t : leaves) t.zero_grad();
  f().backward();
  const double eps = 1e-6;
  for (size_t li = 0; li < leaves.size(); ++li) {
    const Tensor& t = leaves[li];
    ASSERT_TRUE(t.grad().defined()) << "leaf " << li;
    std::vector<double> got = t.grad().to_vector<double>();
    NoGradGuard ng;
    double* p = t.data_ptr<double>();
    for (size_t j = 0; j < got.size(); ++j) {
      const double x0 = p[j];
      p[j] = x0 + eps;
      const double lp = f().item<double>();
      p[j] = x0 - eps;
      const double lm = f().item<double>();
      p[j] = x0;
      EXPECT_NEAR(got[j], (lp - lm) / (2 * eps), tol * (1 + std::abs(got[j]))) << "leaf " << li << " [" << j << "]";
    }
  }
}

template <class F> std::string error_of(F&& f) {
  try {
    f();
  } catch (const OpError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("(not an OpError) ") + e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ClipLoss, MatchesReferenceSingleProcess) {
  std::mt19937 rng(1);
  Mat im = random_unit_rows(5, 4, rng), tx = random_unit_rows(5, 4, rng);
  for (double ls : {0.0, std::log(1 / 0.07), 6.0 /* clamped to log 100 */}) {
    Tensor l = clip_loss(to_tensor(im), to_tensor(tx), Tensor::scalar(ls, DType::f64));
    EXPECT_NEAR(l.item<double>(), ref_clip(im, tx, im, tx, 0, ls), 1e-12) << ls;
    Tensor l32 = clip_loss(to_tensor(im, DType::f32), to_tensor(tx, DType::f32), Tensor::scalar(ls));
    EXPECT_EQ(l32.dtype(), DType::f32);
    EXPECT_NEAR(l32.item<double>(), ref_clip(im, tx, im, tx, 0, ls), 1e-5) << ls;
  }
  ContrastiveOptions o;
  o.max_logit_scale = 1.0;
  Tensor l = clip_loss(to_tensor(im), to_tensor(tx), Tensor::scalar(3.0, DType::f64), {}, o);
  EXPECT_NEAR(l.item<double>(), ref_clip(im, tx, im, tx, 0, 3.0, nullptr, nullptr, 1.0), 1e-12);
}

// Under bf16 autocast the features may arrive in bf16, and the similarity GEMM would be lowered to
// bf16 too: the logits and the loss must still be computed in f32 (the bf16 features' exact values).
TEST(ClipLoss, LogitsInF32UnderBf16Autocast) {
  std::mt19937 rng(7);
  const int64_t n = 64;
  Mat im = random_unit_rows(n, 32, rng), tx = random_unit_rows(n, 32, rng);
  // Near-duplicate texts: the negatives' similarities differ by less than a bf16 step.
  for (int64_t i = 1; i < n; ++i) tx[size_t(i)] = tx[0], tx[size_t(i)][size_t(i % 32)] += 1e-3;
  const Tensor ls = Tensor::scalar(std::log(100.0));
  Tensor ib = to_tensor(im, DType::f32).to(DType::bf16), tb = to_tensor(tx, DType::f32).to(DType::bf16);
  ib.set_requires_grad(true);
  const double want = clip_loss(ib.to(DType::f32), tb.to(DType::f32), ls).item<double>();
  Tensor got;
  {
    AutocastGuard bf16(DType::bf16);
    got = clip_loss(ib, tb, ls);
    Tensor got32 = clip_loss(ib.to(DType::f32), tb.to(DType::f32), ls);  // f32 features, autocast on
    EXPECT_EQ(got32.item<double>(), want);
  }
  EXPECT_EQ(got.dtype(), DType::f32);
  EXPECT_EQ(got.item<double>(), want);
  got.backward();
  ASSERT_TRUE(ib.grad().defined());
  EXPECT_EQ(ib.grad().dtype(), DType::bf16);
}

TEST(ClipLoss, MatchesReferenceLocalAgainstGathered) {
  std::mt19937 rng(2);
  const int64_t N = 8, n = 3, off = 4;
  Mat ia = random_unit_rows(N, 5, rng), ta = random_unit_rows(N, 5, rng);
  Mat il(ia.begin() + off, ia.begin() + off + n), tl(ta.begin() + off, ta.begin() + off + n);
  Tensor l = clip_loss(to_tensor(il), to_tensor(tl), to_tensor(ia), to_tensor(ta), off, Tensor::scalar(2.0, DType::f64));
  EXPECT_NEAR(l.item<double>(), ref_clip(il, tl, ia, ta, off, 2.0), 1e-12);
  // The local losses of all ranks average to the single-process loss (equal shard sizes).
  double sum = 0;
  for (int64_t r = 0; r < 2; ++r) {
    Tensor ilr = to_tensor(ia).narrow(0, r * 4, 4), tlr = to_tensor(ta).narrow(0, r * 4, 4);
    sum += clip_loss(ilr, tlr, to_tensor(ia), to_tensor(ta), r * 4, Tensor::scalar(2.0, DType::f64)).item<double>();
  }
  EXPECT_NEAR(sum / 2, clip_loss(to_tensor(ia), to_tensor(ta), Tensor::scalar(2.0, DType::f64)).item<double>(), 1e-12);
}

TEST(ClipLoss, SameLabelPositivesMatchReference) {
  std::mt19937 rng(3);
  const int64_t N = 7, n = 3, off = 2;
  Mat ia = random_unit_rows(N, 4, rng), ta = random_unit_rows(N, 4, rng);
  Mat il(ia.begin() + off, ia.begin() + off + n), tl(ta.begin() + off, ta.begin() + off + n);
  std::vector<int64_t> la{0, 1, 2, 1, 0, 1, 3}, ll(la.begin() + off, la.begin() + off + n);
  ContrastiveOptions o;
  o.same_label_positives = true;
  Tensor l = clip_loss(to_tensor(il), to_tensor(tl), to_tensor(ia), to_tensor(ta), off, Tensor::scalar(1.5, DType::f64),
                       Tensor::from(ll, {n}), Tensor::from(la, {N}), o);
  EXPECT_NEAR(l.item<double>(), ref_clip(il, tl, ia, ta, off, 1.5, &ll, &la), 1e-12);
  // Distinct labels reduce to the plain loss.
  std::vector<int64_t> distinct{0, 1, 2, 3, 4, 5, 6};
  Tensor d = clip_loss(to_tensor(ia), to_tensor(ta), Tensor::scalar(1.5, DType::f64), Tensor::from(distinct, {N}), o);
  EXPECT_NEAR(d.item<double>(), clip_loss(to_tensor(ia), to_tensor(ta), Tensor::scalar(1.5, DType::f64)).item<double>(),
              1e-12);
}

TEST(ClipLoss, GradientF64) {
  std::mt19937 rng(4);
  // Features need not be unit-norm for the gradient check; logit scale below and above the clamp.
  for (double ls : {1.2, 5.0}) {
    Tensor il = to_tensor(random_unit_rows(3, 4, rng)).set_requires_grad(true);
    Tensor tl = to_tensor(random_unit_rows(3, 4, rng)).set_requires_grad(true);
    Tensor ia = to_tensor(random_unit_rows(6, 4, rng)).set_requires_grad(true);
    Tensor ta = to_tensor(random_unit_rows(6, 4, rng)).set_requires_grad(true);
    Tensor s = Tensor::scalar(ls, DType::f64).set_requires_grad(true);
    gradient_check([&] { return clip_loss(il, tl, ia, ta, 2, s); }, {il, tl, ia, ta, s});
    if (ls > std::log(100.0)) EXPECT_EQ(s.grad().item<double>(), 0.0);  // clamped: no gradient
    else EXPECT_NE(s.grad().item<double>(), 0.0);
    ContrastiveOptions o;
    o.same_label_positives = true;
    Tensor lab_l = Tensor::from(std::vector<int64_t>{1, 0, 1}, {3});
    Tensor lab_a = Tensor::from(std::vector<int64_t>{0, 2, 1, 0, 1, 2}, {6});
    gradient_check([&] { return clip_loss(il, tl, ia, ta, 2, s, lab_l, lab_a, o); }, {il, tl, ia, ta, s});
  }
  // Single process, f32 logit_scale with f64 features: gradient reaches the scale in its own dtype.
  Tensor img = to_tensor(random_unit_rows(4, 3, rng)).set_requires_grad(true);
  Tensor txt = to_tensor(random_unit_rows(4, 3, rng)).set_requires_grad(true);
  Tensor s = Tensor::scalar(2.0, DType::f64).set_requires_grad(true);
  gradient_check([&] { return clip_loss(img, txt, s); }, {img, txt, s});
  Tensor s32 = Tensor::scalar(2.0).set_requires_grad(true);
  clip_loss(img, txt, s32).backward();
  ASSERT_TRUE(s32.grad().defined());
  EXPECT_EQ(s32.grad().dtype(), DType::f32);
  EXPECT_NEAR(s32.grad().item<double>(), s.grad().item<double>(), 1e-6);
}

TEST(ClipLoss, BadInputsNameTheOp) {
  Tensor a = ops::randn({4, 3}), b = ops::randn({4, 3}), s = Tensor::scalar(1.0);
  std::string e = error_of([&] { clip_loss(a, ops::randn({4, 2}), s); });
  EXPECT_NE(e.find("clip_loss"), std::string::npos) << e;
  EXPECT_NE(e.find("f32[4,2]"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { clip_loss(ops::randn({4}), ops::randn({4}), s); }).find("clip_loss"), std::string::npos);
  EXPECT_NE(error_of([&] { clip_loss(a, b, a, b, 2, s); }).find("clip_loss: offset"), std::string::npos);
  EXPECT_NE(error_of([&] { clip_loss(a, b, Tensor::zeros({2})); }).find("clip_loss: logit_scale"), std::string::npos);
  ContrastiveOptions o;
  o.same_label_positives = true;
  e = error_of([&] { clip_loss(a, b, s, {}, o); });
  EXPECT_NE(e.find("clip_loss"), std::string::npos) << e;
  EXPECT_NE(e.find("labels"), std::string::npos) << e;
  e = error_of([&] { clip_loss(a, b, s, Tensor::zeros({3}, DType::i64), o); });
  EXPECT_NE(e.find("clip_loss"), std::string::npos) << e;
  e = error_of([&] { clip_loss(a, b, s, Tensor::zeros({4}), o); });  // float labels
  EXPECT_NE(e.find("clip_loss"), std::string::npos) << e;
  e = error_of([&] { clip_loss(a, b, Tensor()); });
  EXPECT_NE(e.find("clip_loss"), std::string::npos) << e;
}

TEST(TripletLoss, MatchesReference) {
  std::mt19937 rng(5);
  Mat im = random_unit_rows(6, 4, rng), tx = random_unit_rows(6, 4, rng);
  for (double m : {0.0, 0.2, 1.0})
    EXPECT_NEAR(triplet_loss(to_tensor(im), to_tensor(tx), m).item<double>(), ref_triplet(im, tx, m), 1e-12) << m;
  // Perfectly separated pairs with a small margin: zero loss.
  Mat eye(3, std::vector<double>(3, 0.0));
  for (int i = 0; i < 3; ++i) eye[size_t(i)][size_t(i)] = 1;
  EXPECT_EQ(triplet_loss(to_tensor(eye), to_tensor(eye), 0.5).item<double>(), 0.0);
  EXPECT_NEAR(triplet_loss(to_tensor(eye), to_tensor(eye), 1.5).item<double>(), 1.0, 1e-12);  // 2 · 0.5
}

TEST(TripletLoss, GradientF64) {
  std::mt19937 rng(6);
  Tensor im = to_tensor(random_unit_rows(5, 4, rng)).set_requires_grad(true);
  Tensor tx = to_tensor(random_unit_rows(5, 4, rng)).set_requires_grad(true);
  gradient_check([&] { return triplet_loss(im, tx, 0.5); }, {im, tx});
}

TEST(TripletLoss, BadInputsNameTheOp) {
  std::string e = error_of([&] { triplet_loss(ops::randn({4, 3}), ops::randn({5, 3})); });
  EXPECT_NE(e.find("triplet_loss"), std::string::npos) << e;
  EXPECT_NE(e.find("f32[5,3]"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { triplet_loss(ops::randn({1, 3}), ops::randn({1, 3})); }).find("triplet_loss"),
            std::string::npos);
  EXPECT_NE(error_of([&] { triplet_loss(ops::randn({3}), ops::randn({3})); }).find("triplet_loss"), std::string::npos);
}

TEST(ClipLoss, MatchesPyTorchFixture) {
  SafetensorsFile f = load_safetensors(std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/clip_tiny.safetensors");
  Tensor img = f.tensors.at("out/image_features").set_requires_grad(true);
  Tensor txt = f.tensors.at("out/text_features").set_requires_grad(true);
  Tensor loss = clip_loss(img, txt, f.tensors.at("param/logit_scale"));
  EXPECT_NEAR(loss.item<double>(), f.tensors.at("out/loss").item<double>(), 1e-5);
}
