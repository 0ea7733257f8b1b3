// Retrieval metrics (trainers/eval/retrieval.h): which captions are right for which clip, R@K and
// mAP@10 on hand-made similarity matrices.
#include <gtest/gtest.h>
#include "trainers/eval/retrieval.h"

using namespace loom;

TEST(Retrieval, ClipsWithSeveralCaptionRowsAreOneClip) {
  // AudioCaps-style: each clip listed once per caption.
  const RetrievalTruth t = RetrievalTruth::from({"a.wav", "a.wav", "b.wav", "b.wav"}, {"c0", "c1", "c2", "c3"});
  EXPECT_EQ(t.clips(), 2);
  EXPECT_EQ(t.clip_rows, (std::vector<int64_t>{0, 2}));
  EXPECT_TRUE(t.right(0, 0));
  EXPECT_TRUE(t.right(0, 1));
  EXPECT_FALSE(t.right(0, 2));
  EXPECT_TRUE(t.right(1, 3));
  // Demo-style: one row per clip, captions repeated across clips; the same text is right for both.
  const RetrievalTruth d = RetrievalTruth::from({"a.wav", "b.wav", "c.wav"}, {"x", "x", "y"});
  EXPECT_EQ(d.clips(), 3);
  EXPECT_TRUE(d.right(1, 0));
  EXPECT_FALSE(d.right(2, 0));
}

TEST(Retrieval, RecallAndMapByHand) {
  const RetrievalTruth t = RetrievalTruth::from({"a.wav", "a.wav", "b.wav", "b.wav"}, {"c0", "c1", "c2", "c3"});
  // [clips, caption rows]
  const Tensor sim = Tensor::from(std::vector<float>{0.9f, 0.1f, 0.5f, 0.2f,  //
                                                     0.3f, 0.99f, 0.8f, 0.7f},
                                  {2, 4});
  auto a2t = [&](int64_t clip, int64_t row) { return t.right(clip, row); };
  auto t2a = [&](int64_t row, int64_t clip) { return t.right(clip, row); };
  Metrics r = recall_at(sim, a2t, "r");
  EXPECT_DOUBLE_EQ(r.at("r1"), 0.5);  // clip b's best caption (0.8) is beaten by c1 (0.99)
  EXPECT_DOUBLE_EQ(r.at("r5"), 1.0);
  const Tensor sim_t = sim.transpose(0, 1).contiguous();
  r = recall_at(sim_t, t2a, "r");
  EXPECT_DOUBLE_EQ(r.at("r1"), 0.75);  // c1 ranks clip b first
  // clip a: c0 right, c2 wrong, c3 wrong, c1 right -> (1/1 + 2/4) / 2; clip b: c1 wrong, c2 right,
  // c3 right -> (1/2 + 2/3) / 2.
  EXPECT_NEAR(map_at_10(sim, a2t), ((1.0 + 0.5) / 2 + (0.5 + 2.0 / 3) / 2) / 2, 1e-12);
  // One right clip per caption: AP is 1 / rank.
  EXPECT_NEAR(map_at_10(sim_t, t2a), (1.0 + 0.5 + 1.0 + 1.0) / 4, 1e-12);
  // A collapsed model (every score equal) retrieves nothing.
  const Tensor flat = Tensor::full({2, 4}, 0.3);
  EXPECT_DOUBLE_EQ(recall_at(flat, a2t, "r").at("r1"), 0.0);
  // Ties put the two wrong captions first: each clip's right ones at ranks 3 and 4.
  EXPECT_NEAR(map_at_10(flat, a2t), (1.0 / 3 + 2.0 / 4) / 2, 1e-12);
}
