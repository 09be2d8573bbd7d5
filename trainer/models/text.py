"""SDXL text conditioning with Kohya's chunked long-prompt encoding.

As sd-scripts ``library/train_util.py``: ``BaseDataset.get_input_ids`` (the chunks)
and ``get_hidden_states_sdxl`` (the encoding).

Captions longer than 75 tokens (``max_token_length`` 150 or 225) are split into
chunks of ``<BOS> 75 tokens <EOS>``, each encoded separately, and the hidden
states re-joined as BOS + every chunk's body + the final token, so the UNet
sees ``max_token_length + 2`` positions. Both encoders contribute their
penultimate hidden state; the pooled embedding is text encoder 2's projection
of the first chunk.
"""

from __future__ import annotations

import torch
from transformers import CLIPTokenizer

CHUNK = 75  # CLIP's 77 positions minus BOS and EOS


def chunked_input_ids(
    tokenizer: CLIPTokenizer, captions: list[str], max_token_length: int
) -> torch.Tensor:
    """Token ids shaped (batch, chunks, 77)."""
    ids = tokenizer(
        captions,
        padding="max_length",
        truncation=True,
        max_length=max_token_length + 2,
        return_tensors="pt",
    ).input_ids
    if max_token_length == CHUNK:
        return ids.unsqueeze(1)
    pads_with_eos = tokenizer.pad_token_id == tokenizer.eos_token_id
    chunks = []
    for start in range(1, max_token_length + 1, CHUNK):
        chunk = torch.cat([ids[:, :1], ids[:, start : start + CHUNK], ids[:, -1:]], dim=1)
        if not pads_with_eos:
            chunk = _fix_open_clip_chunk(chunk, tokenizer)
        chunks.append(chunk)
    return torch.stack(chunks, dim=1)


def _fix_open_clip_chunk(chunk: torch.Tensor, tokenizer: CLIPTokenizer) -> torch.Tensor:
    """Tokenizer 2 pads with ``!``: end a chunk cut mid-caption with EOS, and make an
    empty chunk ``<BOS><EOS>...`` rather than ``<BOS><PAD>...`` (as sd-scripts does)."""
    chunk = chunk.clone()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    body_end = chunk[:, -2]
    cut = (body_end != eos) & (body_end != pad)
    chunk[cut, -1] = eos
    empty = chunk[:, 1] == pad
    chunk[empty, 1] = eos
    return chunk


def _join_chunks(hidden: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch*chunks, 77, C) -> (batch, chunks*75 + 2, C)."""
    hidden = hidden.reshape(batch, -1, 77, hidden.shape[-1])
    bodies = hidden[:, :, 1:-1].reshape(batch, -1, hidden.shape[-1])
    return torch.cat([hidden[:, 0, :1], bodies, hidden[:, -1, -1:]], dim=1)


def encode_text(
    text_encoder: torch.nn.Module,
    text_encoder_2: torch.nn.Module,
    ids_1: torch.Tensor,
    ids_2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(context (batch, L+2, C1+C2), pooled (batch, C2)) from (batch, chunks, 77) ids."""
    batch, chunks = ids_1.shape[:2]
    out_1 = text_encoder(ids_1.reshape(-1, 77), output_hidden_states=True)
    out_2 = text_encoder_2(ids_2.reshape(-1, 77), output_hidden_states=True)
    # The penultimate layer for both: CLIP-L's hidden_states[11] of 12 layers.
    hidden_1 = _join_chunks(out_1.hidden_states[-2], batch)
    hidden_2 = _join_chunks(out_2.hidden_states[-2], batch)
    pooled = out_2.text_embeds.reshape(batch, chunks, -1)[:, 0]
    return torch.cat([hidden_1, hidden_2.to(hidden_1.dtype)], dim=-1), pooled


def size_conditioning(
    original_hw: tuple[int, int], crop_top_left: tuple[int, int], target_hw: tuple[int, int]
) -> torch.Tensor:
    """SDXL's micro-conditioning: original size, crop offset, target size (all h, w)."""
    return torch.tensor([*original_hw, *crop_top_left, *target_hw], dtype=torch.float32)
