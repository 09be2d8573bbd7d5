"""Cached text-encoder outputs (trainer/data/text_cache.py): in host memory in blocks, or
with ``cache_text_encoder_outputs_to_disk`` one file per image, read for each batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.factories import make_dataset, tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import PayloadError, parse_payload
from trainer.data.batches import Batch
from trainer.data.folders import scan_dataset
from trainer.data.text_cache import PIN_BLOCK_BYTES, host_rows, rows_per_block, write_outputs
from trainer.hooks import null_reporter
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session
from trainer.session import Session
from trainer.step import batch_conditioning

FIXED_CAPTIONS = {"text_encoder_lr": 0, "shuffle_caption": False, "cache_latents": False}


def session(model: Path, data: Path, out: Path, **overrides: object) -> Session:
    config = parse_payload(tiny_payload(max_train_steps=1, **FIXED_CAPTIONS, **overrides)).config
    scan = scan_dataset(data, config.caption_extension)
    job = TrainingJob(config, model, data, out)
    return build_session(job, scan, plan_from_scan(config, scan), null_reporter, 0)


def conditioning(s: Session, image: int) -> tuple[torch.Tensor, torch.Tensor]:
    context, pooled, _ = batch_conditioning(s, Batch(s.images[image].bucket, (image,)))
    return context, pooled


def test_the_memory_cache_keeps_whole_blocks_of_rows():
    row = torch.empty(152, 2048, dtype=torch.float16)  # one image's context at 150 tokens
    assert rows_per_block(row) == PIN_BLOCK_BYTES // row.nbytes == 107  # 64 MiB in a block
    rows = [(torch.full((3, 4), float(i)), torch.full((5,), float(i))) for i in range(3)]
    kept = host_rows(rows, torch.device("cpu"), torch.device("cpu"))
    assert [(c[0, 0].item(), p[0].item()) for c, p in kept] == [(0, 0), (1, 1), (2, 2)]
    first, last = kept[0][0], kept[-1][0]
    assert first.untyped_storage().data_ptr() == last.untyped_storage().data_ptr()  # one block


@shows_effect("cache_text_encoder_outputs_to_disk")
def test_outputs_cached_to_disk_are_read_per_batch_and_reused_while_the_caption_holds(
    tiny_model, tmp_path
):
    data = make_dataset(tmp_path / "data", {"1_a": 3})
    folder = data / "1_a"
    disk = session(tiny_model, data, tmp_path / "out", cache_text_encoder_outputs_to_disk=True)
    assert disk.config.cache_text_encoder_outputs  # implied, as sd-scripts
    files = sorted(folder.glob("*_te_outputs_*.safetensors"))
    assert [f.name.split("_te_outputs_")[0] for f in files] == ["img000", "img001", "img002"]
    memory = session(tiny_model, data, tmp_path / "out", sdxl_cache_text_encoder_outputs=True)
    with torch.no_grad():
        for image in range(3):
            for a, b in zip(conditioning(disk, image), conditioning(memory, image), strict=True):
                assert torch.allclose(a, b, atol=1e-6)
    # Read when a batch asks, not held: a file changed under the run changes its batch.
    target = next(i for i, im in enumerate(disk.images) if im.record.path.stem == "img000")
    caption = disk.images[target].record.caption
    context, pooled = conditioning(disk, target)
    write_outputs(files[0], caption, torch.zeros_like(context[0]), torch.zeros_like(pooled[0]))
    assert not conditioning(disk, target)[0].any()
    stamps = [f.stat().st_mtime_ns for f in files]
    again = session(tiny_model, data, tmp_path / "out", cache_text_encoder_outputs_to_disk=True)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # reused, none encoded again
    assert not conditioning(again, target)[0].any()
    (folder / "img000.txt").write_text("toy, another caption")
    edited = session(tiny_model, data, tmp_path / "out", cache_text_encoder_outputs_to_disk=True)
    assert conditioning(edited, target)[0].any()  # encoded again for the new caption
    assert [f.stat().st_mtime_ns for f in files[1:]] == stamps[1:]


def test_caching_to_disk_implies_caching_and_so_its_rules():
    with pytest.raises(PayloadError) as refused:  # the seed trains the encoders, shuffles tags
        parse_payload(tiny_payload(cache_text_encoder_outputs_to_disk=True))
    assert {p.field for p in refused.value.problems} == {"sdxl_cache_text_encoder_outputs"}
