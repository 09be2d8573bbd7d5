"""Tokenizers built offline, Kohya's chunked long-prompt encoding, caption shuffling."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from tests.trainer.effects import shows_effect
from trainer.data.captions import process_caption, shuffle_tags
from trainer.models.text import chunked_input_ids, encode_text
from trainer.models.tiny import tiny_configs
from trainer.models.tokenizers import build_sdxl_tokenizers

BOS, EOS = 49406, 49407
LONG = ", ".join(f"tag{i} word{i}" for i in range(60))  # far more than 75 tokens


@pytest.fixture(scope="module")
def tokenizers():
    return build_sdxl_tokenizers()


def test_tokenizers_reproduce_clip_ids_from_the_shipped_vocabulary(tokenizers):
    tok1, tok2 = tokenizers
    assert tok1("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert len(tok1) == 49408
    assert tok1.pad_token_id == EOS and tok2.pad_token_id == 0  # tokenizer_2 pads with "!"


@pytest.mark.parametrize("length, chunks", [(75, 1), (150, 2), (225, 3)])
def test_long_captions_split_into_chunks_of_bos_75_tokens_eos(tokenizers, length, chunks):
    tok1, _ = tokenizers
    ids = chunked_input_ids(tok1, [LONG], length)
    assert ids.shape == (1, chunks, 77)
    full = tok1(LONG, truncation=True, max_length=length + 2, padding="max_length").input_ids
    for c in range(chunks):
        assert ids[0, c, 0] == BOS
        assert ids[0, c, 1:76].tolist() == full[1 + 75 * c : 76 + 75 * c]
        assert ids[0, c, 76] == full[-1]


def test_second_tokenizer_chunks_end_with_eos_and_empty_chunks_start_with_eos(tokenizers):
    _, tok2 = tokenizers
    ids = chunked_input_ids(tok2, [LONG, "short caption"], 150)
    long_first = ids[0, 0]
    assert long_first[-1] == EOS  # a chunk cut mid-caption is closed with EOS
    empty_second = ids[1, 1]
    assert empty_second[0] == BOS and empty_second[1] == EOS and empty_second[2] == 0


@shows_effect("max_token_length")
def test_encoded_context_has_max_token_length_plus_two_positions(tokenizers):
    configs = tiny_configs()
    torch.manual_seed(0)
    te1 = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
    tok1, tok2 = tokenizers
    for length in (75, 150, 225):
        ids1 = chunked_input_ids(tok1, [LONG, "x"], length)
        ids2 = chunked_input_ids(tok2, [LONG, "x"], length)
        with torch.no_grad():
            context, pooled = encode_text(te1, te2, ids1, ids2)
        assert context.shape == (2, length + 2, 32 + 64)
        assert pooled.shape == (2, 64)
    # The first chunk's body equals encoding that chunk alone (chunks are independent).
    with torch.no_grad():
        single = te1(ids1[:1, 0], output_hidden_states=True).hidden_states[-2]
        context, _ = encode_text(te1, te2, ids1[:1], ids2[:1])
    assert torch.allclose(context[0, :76, :32], single[0, :76], atol=1e-6)


@shows_effect("shuffle_caption", "keep_tokens")
def test_shuffle_keeps_the_first_keep_tokens_tags_in_place():
    caption = "a, b, c, d, e, f, g, h"
    rng = random.Random(0)
    outputs = {shuffle_tags(caption, 2, rng) for _ in range(30)}
    assert all(o.startswith("a, b, ") for o in outputs)
    assert len(outputs) > 5
    assert all(sorted(o.split(", ")) == sorted(caption.split(", ")) for o in outputs)


def test_captions_are_unchanged_without_shuffle():
    caption = "z, y, x"
    assert process_caption(caption, False, 0, random.Random(0)) == caption
