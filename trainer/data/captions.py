"""Per-sample caption processing (sd-scripts ``BaseDataset.process_caption``, §4.2)."""

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


def process_caption(caption: str, shuffle: bool, keep_tokens: int, rng: random.Random) -> str:
    if shuffle:
        return shuffle_tags(caption, keep_tokens, rng)
    return caption
