#!/usr/bin/env python3
"""Golden fixtures for loom's Hugging Face model import/export: a tiny random BERT and a tiny random CLIP
built with `transformers` (PyPI), saved exactly as `save_pretrained` writes them (config.json +
model.safetensors, float32, Hugging Face parameter names) next to the tokenizer.json of the matching
tokenizer fixture, plus the outputs the `transformers` model gives on fixed inputs.

Every parameter is overwritten with nonzero random values (Linear/Conv weights ~ N(0, fan_in^-1/2),
biases ~ N(0, 0.1), LayerNorm gains 1 + N(0, 0.1) and shifts N(0, 0.1), embeddings, CLIP's
class_embedding included, ~ N(0, 0.5), CLIP's logit_scale 2.3), so that a wrong mapping of any single
tensor changes the outputs.

Writes
  tests/fixtures/hf_bert_tiny/{config.json, model.safetensors, tokenizer.json, expected.safetensors}
      BertModel (with pooler) over the tests/fixtures/bert_wordpiece vocabulary. expected.safetensors:
      input/{input_ids, attention_mask, token_type_ids} I64 [N,16] (tokenizer with [CLS]/[SEP],
      truncated and padded with [PAD] to 16; token types all 0), out/last_hidden_state F32 [N,16,32],
      out/pooler_output F32 [N,32], out/mean_pooled F32 [N,32] (last_hidden_state averaged over the
      positions where attention_mask is 1).
  tests/fixtures/hf_clip_tiny/{config.json, model.safetensors, tokenizer.json, expected.safetensors}
      CLIPModel over the tests/fixtures/clip_bpe vocabulary (<|startoftext|> = 0, <|endoftext|> = 1 =
      eos = pad). Text rows are <|startoftext|> text <|endoftext|>, truncated to 16 keeping
      <|endoftext|> last, padded with <|endoftext|>; attention_mask is 1 up to and including the first
      <|endoftext|>. CLIP's text model pools at the FIRST <|endoftext|> of each row (eos_token_id != 2).
      expected.safetensors: input/{input_ids, attention_mask} I64 [N,16], input/pixel_values F32
      [4,3,16,16] ~ N(0,1), out/text_embeds F32 [N,16] and out/image_embeds F32 [4,16] (projected, not
      normalised), out/text_pooled F32 [N,32] and out/image_pooled F32 [4,32] (pooler outputs before
      projection), out/logit_scale F32 [] (the parameter, before exp).
  tests/fixtures/hf_bert_mlm_tiny/{config.json, model.safetensors, tokenizer.json, expected.safetensors}
      BertForMaskedLM (decoder tied to the word embeddings, BERT's default) over the same vocabulary and
      sentences. expected.safetensors: input/{input_ids, attention_mask, token_type_ids} as hf_bert_tiny's
      but with every non-special position j where j % 4 == 1 replaced by [MASK], input/labels I64 [N,16]
      (the original id there, -100 elsewhere), out/logits F32 [N,16,V] and out/loss F32 [] (the mean
      cross-entropy over the labelled positions, as BertForMaskedLM computes it).
  All carry metadata {"sentences": JSON list, "context": "16"}.

CI does not run this; it needs a virtual environment with torch, transformers, tokenizers, safetensors:
    .venv-torch/bin/python scripts/golden/hf_models.py                (from the repository root)
    .venv-torch/bin/python scripts/golden/hf_models.py --only bert_mlm    (one fixture: bert, bert_mlm, clip)

A second mode checks a directory written by loom's exporter (config.json + model.safetensors under Hugging
Face names): it loads it with BertModel/CLIPModel.from_pretrained (eager attention), runs it on the inputs
stored in the fixture's expected.safetensors, prints the largest absolute difference of every output and
exits nonzero when one exceeds 1e-4:
    .venv-torch/bin/python scripts/golden/hf_models.py --check-export DIR --kind bert|bert_mlm|clip
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertModel, CLIPConfig, CLIPModel

from fixture_io import fixture_path, write_safetensors

CONTEXT = 16
TOLERANCE = 1e-4

BERT_SENTENCES = [
    "A dog barks while cars pass by.",
    "Café au lait, naïve façade — déjà vu?",
    "东京和北京 are cities in 日本",
    "punctuation runs ?!?!... (((nested))) [brackets]",
    "",
    "state-of-the-art pre-training models encode images, audio and text " * 3,
    "two short high beeps, then pink noise fading out",
    "unbelievable understanding underwater",
]

CLIP_SENTENCES = [
    "a photo of a cat",
    "A photo of a DOG.",
    "it's a dog's life, they're sure we've won",
    "Café au lait, naïve façade — déjà vu!",
    "",
    "state-of-the-art pre-training models encode images, audio and text " * 3,
]
NUM_IMAGES = 4


def randomise(model, g, logit_scale=None):
    """Overwrites every parameter of `model` with nonzero random values drawn from generator `g`."""
    def rnd(shape, std):
        return torch.randn(*shape, generator=g) * std

    done = set()
    with torch.no_grad():
        for _, m in sorted(model.named_modules()):
            if isinstance(m, nn.Linear):
                m.weight.copy_(rnd(m.weight.shape, m.in_features ** -0.5))
            elif isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(rnd(m.weight.shape, fan_in ** -0.5))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + rnd(m.weight.shape, 0.1))
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(rnd(m.weight.shape, 0.5))
            else:
                continue
            done.add(id(m.weight))
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(rnd(m.bias.shape, 0.1))
                done.add(id(m.bias))
        for name, p in sorted(model.named_parameters()):
            if id(p) in done:
                continue
            if name == "logit_scale" and logit_scale is not None:
                p.fill_(logit_scale)
            elif name.endswith("class_embedding"):
                p.copy_(rnd(p.shape, 0.5))
            else:
                raise RuntimeError(f"randomise: no rule for parameter {name} {tuple(p.shape)}")
            done.add(id(p))
    for name, p in model.named_parameters():
        assert (p != 0).all(), f"{name} has zeros"


def save_model(model, out, tokenizer_fixture):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)  # transformers 5 always writes model.safetensors (no safe_serialization argument)
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)  # save_pretrained leaves it 0600
    shutil.copyfile(os.path.join(fixture_path(tokenizer_fixture), "tokenizer.json"), os.path.join(out, "tokenizer.json"))


def load_inputs(kind):
    path = os.path.join(fixture_path(f"hf_{kind}_tiny"), "expected.safetensors")
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# ---------------------------------------------------------------- BERT

def bert_inputs():
    tok = Tokenizer.from_file(os.path.join(fixture_path("bert_wordpiece"), "tokenizer.json"))
    cls, pad = tok.token_to_id("[CLS]"), tok.token_to_id("[PAD]")
    tok.enable_truncation(max_length=CONTEXT)
    tok.enable_padding(length=CONTEXT, pad_id=pad, pad_token="[PAD]")
    enc = tok.encode_batch(BERT_SENTENCES)
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    assert (ids[:, 0] == cls).all(), "rows must start with [CLS]"
    assert ((ids == pad) == (mask == 0)).all()
    return {"input/input_ids": ids, "input/attention_mask": mask, "input/token_type_ids": torch.zeros_like(ids)}


def bert_outputs(model, inputs):
    model.eval()
    mask = inputs["input/attention_mask"]
    with torch.no_grad():
        o = model(input_ids=inputs["input/input_ids"], attention_mask=mask,
                  token_type_ids=inputs["input/token_type_ids"], return_dict=True)
    h = o.last_hidden_state
    m = mask.unsqueeze(-1).to(h.dtype)
    mean = (h * m).sum(1) / m.sum(1)
    return {"out/last_hidden_state": h.float(), "out/pooler_output": o.pooler_output.float(), "out/mean_pooled": mean.float()}


def make_bert():
    tok = Tokenizer.from_file(os.path.join(fixture_path("bert_wordpiece"), "tokenizer.json"))
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=24, type_vocab_size=2, hidden_act="gelu",
                        layer_norm_eps=1e-12, pad_token_id=tok.token_to_id("[PAD]"),
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=True).float()
    randomise(model, torch.Generator().manual_seed(1))
    out = fixture_path("hf_bert_tiny")
    save_model(model, out, "bert_wordpiece")
    inputs = bert_inputs()
    tensors = dict(inputs, **bert_outputs(model, inputs))
    write_safetensors(os.path.join(out, "expected.safetensors"), tensors,
                      {"sentences": json.dumps(BERT_SENTENCES, ensure_ascii=False), "context": str(CONTEXT)})
    print(f"wrote {out}: vocabulary {config.vocab_size}, {len(BERT_SENTENCES)} sentences")


# ---------------------------------------------------------------- BERT's masked-language-model head

def bert_mlm_inputs():
    inputs = bert_inputs()
    tok = Tokenizer.from_file(os.path.join(fixture_path("bert_wordpiece"), "tokenizer.json"))
    special = {tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")}
    ids = inputs["input/input_ids"].clone()
    labels = torch.full_like(ids, -100)
    for i in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            if j % 4 == 1 and int(ids[i, j]) not in special:
                labels[i, j] = ids[i, j]
                ids[i, j] = tok.token_to_id("[MASK]")
    assert (labels != -100).sum() > 0
    return dict(inputs, **{"input/input_ids": ids, "input/labels": labels})


def bert_mlm_outputs(model, inputs):
    model.eval()
    with torch.no_grad():
        o = model(input_ids=inputs["input/input_ids"], attention_mask=inputs["input/attention_mask"],
                  token_type_ids=inputs["input/token_type_ids"], labels=inputs["input/labels"], return_dict=True)
    return {"out/logits": o.logits.float(), "out/loss": o.loss.float().reshape(())}


def make_bert_mlm():
    tok = Tokenizer.from_file(os.path.join(fixture_path("bert_wordpiece"), "tokenizer.json"))
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=24, type_vocab_size=2, hidden_act="gelu",
                        layer_norm_eps=1e-12, pad_token_id=tok.token_to_id("[PAD]"),
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tie_word_embeddings=True)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = BertForMaskedLM(config).float()
    randomise(model, torch.Generator().manual_seed(4))
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    out = fixture_path("hf_bert_mlm_tiny")
    save_model(model, out, "bert_wordpiece")
    inputs = bert_mlm_inputs()
    tensors = dict(inputs, **bert_mlm_outputs(model, inputs))
    write_safetensors(os.path.join(out, "expected.safetensors"), tensors,
                      {"sentences": json.dumps(BERT_SENTENCES, ensure_ascii=False), "context": str(CONTEXT)})
    print(f"wrote {out}: vocabulary {config.vocab_size}, {int((inputs['input/labels'] != -100).sum())} masked tokens")


# ---------------------------------------------------------------- CLIP

def clip_inputs(g):
    tok = Tokenizer.from_file(os.path.join(fixture_path("clip_bpe"), "tokenizer.json"))
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    assert (sot, eot) == (0, 1)
    rows, masks = [], []
    for s in CLIP_SENTENCES:
        ids = tok.encode(s).ids
        assert ids[0] == sot and ids[-1] == eot
        if len(ids) > CONTEXT:
            ids = ids[:CONTEXT - 1] + [eot]
        first = ids.index(eot)
        masks.append([1] * (first + 1) + [0] * (CONTEXT - first - 1))
        rows.append(ids + [eot] * (CONTEXT - len(ids)))
    pixels = torch.randn(NUM_IMAGES, 3, 16, 16, generator=g)
    return {"input/input_ids": torch.tensor(rows, dtype=torch.int64),
            "input/attention_mask": torch.tensor(masks, dtype=torch.int64),
            "input/pixel_values": pixels.float()}


def projected(x):
    """get_*_features returns the projected embeddings as a tensor in older transformers and as the
    pooler_output of a model output in transformers 5."""
    return x if isinstance(x, torch.Tensor) else x.pooler_output


def clip_outputs(model, inputs):
    model.eval()
    ids, mask, pixels = inputs["input/input_ids"], inputs["input/attention_mask"], inputs["input/pixel_values"]
    with torch.no_grad():
        text_pooled = model.text_model(input_ids=ids, attention_mask=mask, return_dict=True).pooler_output
        image_pooled = model.vision_model(pixel_values=pixels, return_dict=True).pooler_output
        text_embeds = projected(model.get_text_features(input_ids=ids, attention_mask=mask))
        image_embeds = projected(model.get_image_features(pixel_values=pixels))
        # The pooled states are the ones the projections are applied to.
        assert torch.allclose(text_embeds, model.text_projection(text_pooled), atol=1e-6)
        assert torch.allclose(image_embeds, model.visual_projection(image_pooled), atol=1e-6)
        logit_scale = model.logit_scale.detach().clone()
    return {"out/text_embeds": text_embeds.float(), "out/image_embeds": image_embeds.float(),
            "out/text_pooled": text_pooled.float(), "out/image_pooled": image_pooled.float(),
            "out/logit_scale": logit_scale.float().reshape(())}


def make_clip():
    tok = Tokenizer.from_file(os.path.join(fixture_path("clip_bpe"), "tokenizer.json"))
    text = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=CONTEXT, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16)
    vision = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                  projection_dim=16)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=2.6592)
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = CLIPModel(config).float()
    assert model.text_model.eos_token_id == 1  # first-<|endoftext|> pooling, not the legacy argmax (eos == 2)
    randomise(model, torch.Generator().manual_seed(2), logit_scale=2.3)
    out = fixture_path("hf_clip_tiny")
    save_model(model, out, "clip_bpe")
    inputs = clip_inputs(torch.Generator().manual_seed(3))
    tensors = dict(inputs, **clip_outputs(model, inputs))
    write_safetensors(os.path.join(out, "expected.safetensors"), tensors,
                      {"sentences": json.dumps(CLIP_SENTENCES, ensure_ascii=False), "context": str(CONTEXT)})
    print(f"wrote {out}: vocabulary {text['vocab_size']}, {len(CLIP_SENTENCES)} sentences, {NUM_IMAGES} images")


# ---------------------------------------------------------------- checking an export

def check_export(directory, kind):
    cls, run = {"bert": (BertModel, bert_outputs), "bert_mlm": (BertForMaskedLM, bert_mlm_outputs),
                "clip": (CLIPModel, clip_outputs)}[kind]
    model, info = cls.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32,
                                      output_loading_info=True)
    # a tensor transformers had to initialise itself, or one it did not know, is an exporter bug
    # even when the outputs happen to agree
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        print(f"{kind}: FAIL, transformers reports {bad}")
        return 1
    stored = load_inputs(kind)
    inputs = {k: v for k, v in stored.items() if k.startswith("input/")}
    got = run(model, inputs)
    worst = 0.0
    for name in sorted(k for k in stored if k.startswith("out/")):
        diff = (got[name].float() - stored[name].float()).abs().max().item()
        worst = max(worst, diff)
        print(f"{name:24s} {tuple(stored[name].shape)!s:16s} max |diff| {diff:.3g}")
    ok = worst <= TOLERANCE
    print(f"{kind}: {'OK' if ok else 'FAIL'} (largest difference {worst:.3g}, tolerance {TOLERANCE:g})")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check-export", metavar="DIR", help="check an exported directory instead of writing fixtures")
    ap.add_argument("--kind", choices=["bert", "bert_mlm", "clip"], help="model kind of --check-export")
    ap.add_argument("--only", choices=["bert", "bert_mlm", "clip"], help="write this fixture only")
    a = ap.parse_args()
    if a.check_export:
        if not a.kind:
            ap.error("--check-export needs --kind")
        sys.exit(check_export(a.check_export, a.kind))
    makers = {"bert": make_bert, "bert_mlm": make_bert_mlm, "clip": make_clip}
    for name, make in makers.items():
        if a.only in (None, name):
            make()


if __name__ == "__main__":
    main()
