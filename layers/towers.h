// A model as towers keyed by modality — ImageBind's layout (per-modality trunks, heads into one
// space, a temperature per pair of modalities), written loom's way. Every model loom trains is one:
// CLIP is {image: ViT, text: causal transformer} with linear heads and one temperature, CLAP
// {audio, text} with MLP heads, a ViT or AST alone has one tower and no head, and an ImageBind-style
// model binds image, text and audio. Tasks reach towers only through this interface, never by
// casting to a family (trainers/models.h builds these from recipes).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "layers/transformer.h"

namespace loom {

// A tower's projection: Linear(width, d) [ReLU, Linear(d, d)] (LAION-CLAP's with mlp; children fc1, fc2).
class Projection : public Module {
 public:
  Projection(int64_t in, int64_t out, bool mlp, Generator& gen);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> fc1, fc2;  // fc2 null for linear
};

// A head into the shared space: the module registered as "<tower>_proj" and how it maps [B, width] to [B, E].
struct TowerHead {
  std::shared_ptr<Module> module;
  std::function<Tensor(const Tensor&)> project;
};
// CLIP's head: a bias-free Linear (std in^-0.5), parameter "<tower>_proj.weight".
TowerHead linear_head(int64_t in, int64_t out, Generator& gen);
// A Projection (mlp or its fc1 alone, PyTorch's default init as LAION-CLAP's): "<tower>_proj.fc1.*".
TowerHead projection_head(int64_t in, int64_t out, bool mlp, Generator& gen);

// Joint (fusion) layers over several towers' tokens, CAV-MAE's shared layers: pre-LN blocks over the
// concatenated tokens of `over` (each with a learned modality-type embedding "type_<m>" added first),
// then "norm" for the fused sequence, or a modality's own "norm_<m>" when it passes alone (CAV-MAE's
// contrastive path). The towers must be ViT-style and of this width.
class JointLayers : public Module {
 public:
  JointLayers(const std::vector<std::string>& over, int64_t width, int64_t heads, double mlp_ratio, int64_t layers,
              Generator& gen);
  // tokens[i] [B, T_i, width] of over[i] -> each one's tokens after the blocks over all of them.
  std::vector<Tensor> forward(const std::vector<Tensor>& tokens, Generator* drop_gen = nullptr) const;
  // One modality's tokens alone through the blocks and its own norm.
  Tensor forward_one(const std::string& modality, const Tensor& tokens, Generator* drop_gen = nullptr) const;
  bool covers(const std::string& modality) const;
  std::vector<std::string> over;
  std::shared_ptr<ModuleList<Block>> blocks;
  std::shared_ptr<LayerNorm> norm;
  std::vector<std::shared_ptr<LayerNorm>> norms;  // per over[i]
  std::vector<Tensor> types;                      // per over[i], [width]

 private:
  size_t index(const std::string& modality) const;
};

// An encoder of several towers' inputs as one sequence, whose weights the towers share (VLMo's
// Multiway Transformer, layers/multiway.h): the fusion path of image-text matching and of masked
// language modelling conditioned on the image. Registered on the model under its layout name.
class FusionEncoder : public Module {
 public:
  virtual std::vector<std::string> fuses() const = 0;  // the modalities it reads, in sequence order
  // inputs by modality (each as its tower reads it) -> the hidden states [B, S, width] of the
  // concatenated sequence, the modalities' tokens in fuses() order (position 0: the first one's first
  // token, text's [CLS] in VLMo's order); drop_gen drives drop-path (training only).
  // masked: BEiT's masked-patch input for one patch modality (VL-BEiT's masked vision-language
  // modelling): its patches where mask [B, N] is 1 enter as `token` before the positions are added.
  struct PatchMask {
    std::string modality;
    Tensor mask, token;
  };
  virtual Tensor fuse(const std::map<std::string, Tensor>& inputs, Generator* drop_gen = nullptr,
                      const PatchMask* masked = nullptr) const = 0;
  virtual int64_t fusion_width() const = 0;
};

struct TowerLayout {
  struct Tower {
    std::string modality;  // the batch key it reads: image | audio | text | ...
    std::string name;      // its child name ("visual" in CLIP's layout; the modality in the general one)
    std::function<std::shared_ptr<Encoder>(Generator&)> build;
    // The head into the shared space (embed_dim wide), registered as name + "_proj"; null: none.
    std::function<TowerHead(int64_t width, int64_t embed_dim, Generator&)> head;
  };
  // A learnable log temperature for a pair, the parameter `name`, log(1 / init_temperature) at first.
  struct Scale {
    std::string a, b, name;
    double init_temperature = 0.07;
  };
  // Joint layers "joint" over some towers (layers 0: none), built after the heads.
  struct Joint {
    std::vector<std::string> over;
    int64_t layers = 0, heads = 4;
    double mlp_ratio = 4.0;
  };
  std::vector<Tower> towers;
  int64_t embed_dim = 0;
  std::vector<Scale> scales;
  Joint joint;
  // Modules the towers share, built before the towers (they capture them) and registered on the model
  // under their names after them; a FusionEncoder among them is the model's fusion().
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> shared;
};

class MultimodalModel : public Module {
 public:
  // Built from `gen` in a fixed order: every tower in layout order, then every head, then the scales
  // (CLIP's and CLAP's own order, so their weights are those of the same seed before this layer).
  MultimodalModel(const TowerLayout& layout, Generator& gen);

  std::vector<std::string> modalities() const;  // in layout order
  std::vector<std::string> tower_names() const;  // their child names ("visual", "text"), in layout order
  bool has_tower(const std::string& modality) const;
  bool has_head(const std::string& modality) const;  // projects into the shared space
  // The modality's trunk; throws loom::Error naming the modality and the towers there are.
  Encoder& tower(const std::string& modality) const;
  std::shared_ptr<Encoder> tower_ptr(const std::string& modality) const;
  std::shared_ptr<Module> head_ptr(const std::string& modality) const;  // null without a head
  // The tower's pooled output [B, width].
  Tensor encode(const std::string& modality, const Tensor& input, Generator* drop_gen = nullptr) const;
  // Projected into the shared space and L2-normalised [B, embed_dim]; throws without a head. A tower
  // under joint layers is pooled as CAV-MAE pools it: its tokens through the joint layers alone,
  // averaged over the patch tokens.
  Tensor embed(const std::string& modality, const Tensor& input, Generator* drop_gen = nullptr) const;
  // The same from a ViT-style tower's output tokens [B, 1+K, width] (class token first; K may be the
  // visible patches of a masked pass, so a task can reuse what another encoded).
  Tensor embed_tokens(const std::string& modality, const Tensor& tokens, Generator* drop_gen = nullptr) const;
  const JointLayers* joint() const { return joint_.get(); }
  // The encoder over several towers' inputs together (TowerLayout::shared); null when the model has none.
  const FusionEncoder* fusion() const { return fusion_; }
  // The pair's learnable log scale (a handle onto the parameter, either order of a and b), or an
  // undefined tensor when the model has none for it.
  Tensor pair_logit_scale(const std::string& a, const std::string& b) const;
  int64_t embed_dim() const { return embed_dim_; }

 private:
  struct Slot {
    std::string modality, name;
    std::shared_ptr<Encoder> tower;
    TowerHead head;
  };
  const Slot& slot(const std::string& modality) const;
  std::vector<Slot> slots_;
  std::vector<std::pair<TowerLayout::Scale, Tensor>> scales_;
  std::shared_ptr<JointLayers> joint_;
  const FusionEncoder* fusion_ = nullptr;
  int64_t embed_dim_ = 0;
};

}  // namespace loom
