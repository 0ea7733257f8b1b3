// Comparison of loom tensors with PyTorch golden fixtures, shared by the golden tests.
#pragma once
#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "core/safetensors.h"

namespace loom::testing {

// |got - want| <= rtol * max|want| + rtol * |want| elementwise: float32 tolerance relative to the
// tensor's own scale (a gradient entry far below the tensor's scale is compared absolutely).
inline void expect_close(const Tensor& got, const Tensor& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  double scale = 0;
  for (double x : w) scale = std::max(scale, std::abs(x));
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::abs(g[i] - w[i]) > rtol * (scale + std::abs(w[i]))) {
      if (++bad <= 3) ADD_FAILURE() << what << "[" << i << "]: loom " << g[i] << ", torch " << w[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " entries differ";
}

// The tensor `key` of a fixture file; throws naming the key when it is absent.
inline Tensor fixture_tensor(const SafetensorsFile& f, const std::string& key) {
  auto it = f.tensors.find(key);
  if (it == f.tensors.end()) throw Error("fixture has no tensor " + key);
  return it->second;
}

}  // namespace loom::testing
