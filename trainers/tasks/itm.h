// Image-text matching with hard negatives (VLMo, ALBEF), the part of task itm (tasks/itm.cpp) that
// tests reach: which negatives a data-parallel batch draws.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>
#include "core/rng.h"
#include "core/tensor.h"

namespace loom {
namespace distributed { class Communicator; }
class MultimodalModel;

// The match log-odds logit(match) - logit(no match) of each pair (images[b], texts[b]) by the model's
// ITM head ("itm_head", which task itm adds) on the fusion encoder's first state. Throws loom::Error
// naming `who` when the model has no fusion encoder or no ITM head.
Tensor itm_match_log_odds(const MultimodalModel& model, const Tensor& images, const Tensor& texts, const std::string& who);

// For each row b of sim [B, G] (a local query's scores against G candidates), one candidate drawn
// with probability softmax(sim[b]) renormalised over the candidates `allowed(b, j)` lets through
// (the caller excludes the positive), by inverting the distribution at uniform[b] in [0, 1); uniform
// over them when the softmax underflows there; -1 when none is allowed.
std::vector<int64_t> sample_hard_negatives(const Tensor& sim, const std::function<bool(int64_t, int64_t)>& allowed,
                                           const std::vector<double>& uniform);

// The negatives of one data-parallel step. Every rank's embeddings and inputs are gathered without
// gradient; image b of this rank gets text text_for_image[b] of the gathered texts (a row of
// all_texts), and text b image image_for_text[b] of all_images. A text with the same token ids as
// the positive caption (captions repeat) is never a negative, nor the image of such a text; with
// labels (i64 [B], -1 none), neither is a candidate of the same label (exclude_same_label: class
// data, whose captions of one class say the same thing in other words).
struct ItmNegatives {
  std::vector<int64_t> text_for_image, image_for_text;
  Tensor all_images, all_texts;  // every rank's, in rank order
  int64_t offset = 0;            // this rank's first row in them
};
// image_emb, text_emb [B, E] (L2-normalised, this rank's), images and texts (the towers' inputs),
// scale: the ITC logit scale. comm null or of world 1: this process alone.
ItmNegatives itm_hard_negatives(const Tensor& image_emb, const Tensor& text_emb, const Tensor& images, const Tensor& texts,
                                double scale, distributed::Communicator* comm, Generator& gen, const Tensor& labels = {});

}  // namespace loom
