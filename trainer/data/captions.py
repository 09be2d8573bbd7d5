"""Per-sample caption processing (sd-scripts ``library/train_util.py``:
``BaseDataset.process_caption``)."""

from __future__ import annotations

import random


def shuffle_tags(caption: str, keep_tokens: int, rng: random.Random) -> str:
    """Shuffle the comma-separated tags after the first ``keep_tokens``.

    ``keep_tokens`` counts tags, not CLIP tokens, as in Kohya.
    """
    tags = [tag.strip() for tag in caption.split(",")]
    fixed, flexible = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(flexible)
    return ", ".join(fixed + flexible)


def drops_caption(rate: float, every_n_epochs: int | None, epoch: int, rng: random.Random) -> bool:
    """sd-scripts' caption dropout: every caption of every n-th (1-based) epoch, or
    each caption with probability ``rate`` (one draw per sample when the rate is set)."""
    if every_n_epochs and epoch % every_n_epochs == 0:
        return True
    return bool(rate) and rng.random() < rate


def process_caption(caption: str, shuffle: bool, keep_tokens: int, rng: random.Random) -> str:
    if shuffle:
        return shuffle_tags(caption, keep_tokens, rng)
    return caption
