#!/usr/bin/env python3
"""Golden fixture for loom's CLIP BPE tokenizer (data/clip_bpe.h): a small tokenizer built here with
the `tokenizers` package from PyPI in CLIP's layout (as openai/clip-* ship tokenizer.json: NFC,
whitespace runs to one space, lowercase; Split by CLIP's pattern; ByteLevel without its own regex;
BPE with "</w>" ending words and <|endoftext|> as unknown; RobertaProcessing with
<|startoftext|>/<|endoftext|>), trained on a small corpus, and the ids it gives for a fixed set of
sentences (accents, CJK, emoji, contractions, punctuation runs, long words, special tokens in the text,
empty strings, texts longer than the context).

Writes tests/fixtures/clip_bpe/{tokenizer.json, expected.json}. CI does not run this:
    python3 -m venv .venv-golden && .venv-golden/bin/pip install tokenizers
    .venv-golden/bin/python scripts/golden/hf_clip_bpe.py       (from the repository root)
"""
import json
import os

import tokenizers
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from hf_wordpiece import CORPUS, SENTENCES

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "clip_bpe")
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
MORE = [
    "it's a dog's life, they're sure we've won, I'm fine, you'll see, he'd go",
    "don''t stop, rock'n'roll",
    "<|startoftext|>a photo of a cat<|endoftext|>",
    "A photo of a DOG.",
    "\u00e9t\u00e9 vs e\u0301te\u0301 (precomposed and combining)",
]
CONTEXT = 16


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=1, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>")
    tok.train_from_iterator(CORPUS, trainer)
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", eot), ("<|startoftext|>", sot),
                                                      trim_offsets=False, add_prefix_space=False)
    path = os.path.join(OUT, "tokenizer.json")
    tok.save(path)
    fast = Tokenizer.from_file(path)
    sentences = SENTENCES + MORE
    full = [fast.encode(s).ids for s in sentences]
    fast.enable_truncation(max_length=CONTEXT)
    fast.enable_padding(length=CONTEXT, pad_id=eot, pad_token="<|endoftext|>")
    batch = fast.encode_batch(sentences)
    expected = dict(tokenizers_version=tokenizers.__version__, context=CONTEXT, sentences=sentences, ids=full,
                    batch_ids=[e.ids for e in batch])
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: vocabulary {fast.get_vocab_size()}, {len(sentences)} sentences")


if __name__ == "__main__":
    main()
