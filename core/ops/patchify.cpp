// Image <-> patch sequences, as MAE orders them: reshapes and a permute, so autograd comes from the views;
// overlapping patches are a gather (index_select), whose backward adds the overlaps.
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

Tensor patchify(const Tensor& images, int64_t p) {
  LOOM_OP_SCOPE("patchify");
  check_defined("patchify", {{"images", images}});
  if (images.dim() != 4) fail("patchify", "images must be [B, C, H, W]", {{"images", images}});
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  if (p <= 0 || H % p != 0 || W % p != 0)
    fail("patchify", str_cat("patch size ", p, " must divide height ", H, " and width ", W), {{"images", images}});
  const int64_t h = H / p, w = W / p;
  return images.reshape({B, C, h, p, w, p}).permute({0, 2, 4, 3, 5, 1}).reshape({B, h * w, p * p * C});
}

Tensor unpatchify(const Tensor& patches, int64_t p, int64_t C, int64_t H, int64_t W) {
  LOOM_OP_SCOPE("unpatchify");
  check_defined("unpatchify", {{"patches", patches}});
  if (p <= 0 || C <= 0 || H % p != 0 || W % p != 0)
    fail("unpatchify", str_cat("patch size ", p, " must divide height ", H, " and width ", W), {{"patches", patches}});
  const int64_t h = H / p, w = W / p;
  if (patches.dim() != 3 || patches.size(1) != h * w || patches.size(2) != p * p * C)
    fail("unpatchify", str_cat("patches must be [B, ", h * w, ", ", p * p * C, "] for a ", C, "x", H, "x", W, " image"),
         {{"patches", patches}});
  const int64_t B = patches.size(0);
  return patches.reshape({B, h, w, p, p, C}).permute({0, 5, 1, 3, 2, 4}).reshape({B, C, H, W});
}

Tensor extract_patches(const Tensor& images, int64_t p, int64_t stride) {
  LOOM_OP_SCOPE("extract_patches");
  check_defined("extract_patches", {{"images", images}});
  if (images.dim() != 4) fail("extract_patches", "images must be [B, C, H, W]", {{"images", images}});
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  if (p <= 0 || stride <= 0 || p > H || p > W)
    fail("extract_patches", str_cat("patch ", p, " and stride ", stride, " must be positive and the patch no larger than ",
                                    H, "x", W), {{"images", images}});
  if (stride == p && H % p == 0 && W % p == 0) return patchify(images, p);
  const int64_t gh = (H - p) / stride + 1, gw = (W - p) / stride + 1, per = p * p * C;
  std::vector<int64_t> index(size_t(gh * gw * per));
  for (int64_t i = 0; i < gh; ++i)
    for (int64_t j = 0; j < gw; ++j)
      for (int64_t pi = 0; pi < p; ++pi)
        for (int64_t pj = 0; pj < p; ++pj)
          for (int64_t c = 0; c < C; ++c)
            index[size_t(((i * gw + j) * p * p + pi * p + pj) * C + c)] = (c * H + i * stride + pi) * W + j * stride + pj;
  const Tensor idx = Tensor::from(index, {int64_t(index.size())}).to(images.device());
  return index_select(images.reshape({B, C * H * W}), 1, idx).reshape({B, gh * gw, per});
}

}  // namespace loom::ops
