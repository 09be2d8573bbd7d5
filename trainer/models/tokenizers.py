"""Both SDXL tokenizers, built offline from the CLIP BPE vocabulary we ship.

SDXL's two text encoders share OpenAI CLIP's byte-pair vocabulary (49,408
tokens). The vocabulary file (``bpe_simple_vocab_16e6.txt.gz``, MIT-licensed,
from open-clip-torch) lies in ``trainer/assets``; the token table is derived
from it exactly as CLIP derives it, so no model hub is ever contacted.
The second tokenizer pads with ``!`` (id 0), as SDXL's ``tokenizer_2`` does.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

from transformers import CLIPTokenizer

_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_MERGE_COUNT = 49152 - 256 - 2  # the merges CLIP uses; the file holds more
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77


def _byte_alphabet() -> list[str]:
    """CLIP's reversible byte -> printable-unicode table, in CLIP's order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:  # merges as "a b" lines
    raw = resources.files("trainer").joinpath("assets", _BPE_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = tuple(lines[1 : _MERGE_COUNT + 1])
    alphabet = _byte_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, merges


def build_clip_tokenizer(pad_token: str = EOS) -> CLIPTokenizer:
    vocab, merges = _vocab_and_merges()
    pairs: Any = [tuple(merge.split()) for merge in merges]  # typed as str upstream; pairs work
    tokenizer = CLIPTokenizer(
        vocab=dict(vocab),
        merges=pairs,
        pad_token=pad_token,
        unk_token=EOS,
    )
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    return tokenizer


def build_sdxl_tokenizers() -> tuple[CLIPTokenizer, CLIPTokenizer]:
    """(tokenizer, tokenizer_2) as SDXL uses them."""
    return build_clip_tokenizer(EOS), build_clip_tokenizer("!")
