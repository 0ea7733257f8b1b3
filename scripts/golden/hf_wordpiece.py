#!/usr/bin/env python3
"""Golden fixture for loom's WordPiece tokenizer (data/wordpiece.h): a small BERT-style tokenizer
trained here with the `tokenizers` package from PyPI (BertWordPieceTokenizer: BertNormalizer with
lowercasing and accent stripping, BertPreTokenizer, WordPiece with "##"), saved as tokenizer.json,
and the ids it gives for a fixed set of sentences (accents, CJK, emoji, punctuation runs, very long
words, control characters, empty strings, special tokens in the text, texts longer than the context).

Writes tests/fixtures/bert_wordpiece/{tokenizer.json, expected.json}. CI does not run this; it needs
a virtual environment with `tokenizers`:
    python3 -m venv .venv-golden && .venv-golden/bin/pip install tokenizers
    .venv-golden/bin/python scripts/golden/hf_wordpiece.py       (from the repository root)
"""
import json
import os

import tokenizers
from tokenizers import BertWordPieceTokenizer, processors

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "bert_wordpiece")

CORPUS = [
    "a dog barks while cars pass by on a wet street",
    "two short high beeps, then pink noise fading out",
    "a low female voice slowly says 'seven'",
    "the orchestra plays a slow waltz; the audience claps",
    "rain falls on a tin roof and thunder rumbles far away",
    "Café au lait, naïve façade, résumé — déjà vu!",
    "machine learning models encode images, audio and text",
    "东京 北京 上海 日本 中文 字符",
    "unbelievable unbreakable understanding underwater",
    "running runner runs ran; jumping jumped jumps",
    "state-of-the-art pre-training (self-supervised) models",
    "numbers 12 345 6789 and 3.14159 or 2,718",
] * 20

SENTENCES = [
    "A dog barks while cars pass by.",
    "Two SHORT high beeps, then pink noise fading out!!!",
    "Café au lait, naïve façade — déjà vu?",
    "ÉCOLE Ñandú Øresund Ærø straße",
    "东京和北京 are cities in 日本 and 中国",
    "emoji 🙂🎵 and a 🐕 barking",
    "punctuation runs ?!?!... ---- (((nested))) [brackets] {braces}",
    "a" * 150,
    "unbelievableunderstandingunderwater",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "control\x00chars\x07and\u200bzero\u200dwidth",
    "",
    "   ",
    "[CLS] inside the text [SEP] and [MASK] too",
    "state-of-the-art pre-training models encode images, audio and text " * 4,
    "numbers 12 345 6789 and 3.14159",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ﬁ ligature",
]
CONTEXT = 12


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True, strip_accents=None, clean_text=True, handle_chinese_chars=True)
    tok.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, limit_alphabet=200,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    # As a pretrained BERT's tokenizer.json has it ([CLS] $A [SEP]); a freshly trained one has none.
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    path = os.path.join(OUT, "tokenizer.json")
    tok.save(path)
    fast = tokenizers.Tokenizer.from_file(path)
    full = [fast.encode(s).ids for s in SENTENCES]
    fast.enable_truncation(max_length=CONTEXT)
    fast.enable_padding(length=CONTEXT, pad_id=fast.token_to_id("[PAD]"), pad_token="[PAD]")
    batch = fast.encode_batch(SENTENCES)
    expected = dict(tokenizers_version=tokenizers.__version__, context=CONTEXT, sentences=SENTENCES, ids=full,
                    batch_ids=[e.ids for e in batch], batch_mask=[e.attention_mask for e in batch])
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
    print(f"wrote {OUT}: vocabulary {fast.get_vocab_size()}, {len(SENTENCES)} sentences")


if __name__ == "__main__":
    main()
