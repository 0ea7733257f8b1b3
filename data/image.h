// Image decoding: JPEG with libjpeg-turbo (as Pillow), binary PGM/PPM by loom, the rest with stb_image
// (PNG, BMP, GIF). Other formats (TGA, PSD, HDR, WebP, ...) are refused as unsupported: convert them first.
#pragma once
#include <cstdint>
#include <string>
#include "core/tensor.h"

namespace loom::data {

// f32 [C, H, W] in [0, 1], converted to `channels` (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) whatever the
// file holds. A missing, unreadable or corrupt file is a loom::Error naming the path.
Tensor decode_image(const std::string& path, int64_t channels);

// The same from bytes already in memory; `name` is used in errors.
Tensor decode_image_bytes(const unsigned char* bytes, size_t size, int64_t channels, const std::string& name);

// Writes f32 [C, H, W] (C = 1 or 3) with values in [0, 1] (clamped; NaN as 0) as a PNG, through a
// temporary file and a rename.
void write_png(const std::string& path, const Tensor& image);

}  // namespace loom::data
