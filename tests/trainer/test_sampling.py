"""Sample images during training: Kohya's prompt lines, samplers, when to sample, the PNGs,
and that sampling leaves the training run exactly as it would have been."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.factories import tiny_payload
from tests.trainer.effects import shows_effect
from trainer.config import KEYS, PayloadError, parse_payload
from trainer.data.folders import scan_dataset
from trainer.hooks import ArtifactSaved, Event, PhaseChanged, null_reporter
from trainer.models.loading import training_noise_scheduler
from trainer.plan import plan_from_scan
from trainer.run import TrainingJob, build_session, train
from trainer.sampling.generate import eval_mode, isolated_rng, render
from trainer.sampling.prompts import (
    PromptError,
    SamplePrompt,
    parse_line,
    parse_prompts,
    prompt_lines,
)
from trainer.sampling.samples import (
    due_after_epoch,
    due_after_step,
    sample_file_name,
    sample_if_due,
)
from trainer.sampling.schedulers import SAMPLER_CLASSES, build_sampler

# numpy 2 on torch tensors inside diffusers' schedulers: thousands of lines of noise.
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")

# --- prompt lines -------------------------------------------------------------------------


def test_a_prompt_line_reads_every_option():
    line = "a cat, sitting --n blurry, ugly --w 768 --h 1024 --s 20 --l 5.5 --d 42 --ss dpmsolver++"
    assert parse_line(line, 3) == SamplePrompt(
        index=3, prompt="a cat, sitting", negative_prompt="blurry, ugly", width=768,
        height=1024, steps=20, scale=5.5, seed=42, sampler="dpmsolver++",
    )  # fmt: skip


def test_option_names_and_sampler_names_are_case_insensitive():
    prompt = parse_line("a cat --W 640 --H 576 --S 12 --L 4 --D 9 --N dark --SS Euler_A", 0)
    assert (prompt.width, prompt.height, prompt.steps, prompt.scale) == (640, 576, 12, 4.0)
    assert (prompt.seed, prompt.negative_prompt, prompt.sampler) == (9, "dark", "euler_a")


def test_a_bare_prompt_gets_kohyas_defaults():
    prompt = parse_line("  a cat  ", 0)
    assert prompt == SamplePrompt(0, "a cat", "", 512, 512, 30, 7.5, None, None)


def test_sizes_floor_to_a_multiple_of_8_with_64_at_least_and_steps_clamp():
    prompt = parse_line("a --w 100 --h 10 --s 0", 0)
    assert (prompt.width, prompt.height, prompt.steps) == (96, 64, 1)
    assert parse_line("a --s 5000", 0).steps == 1000


def test_a_line_starting_with_an_option_has_an_empty_prompt():
    prompt = parse_line("--n ugly --d 1", 0)
    assert (prompt.prompt, prompt.negative_prompt, prompt.seed) == ("", "ugly", 1)


def test_blank_and_comment_lines_are_skipped_and_prompts_indexed_in_order():
    text = "# header\n\nfirst --d 1\n   \n  # indented comment\nsecond\n"
    assert prompt_lines(text) == [(3, "first --d 1"), (6, "second")]
    assert [(p.index, p.prompt) for p in parse_prompts(text)] == [(0, "first"), (1, "second")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a --w abc", "--w needs a whole number, got 'abc'"),
        ("a --h 5000", "--h must be at most 4096"),
        ("a --s -3", "--s needs a whole number"),
        ("a --l lots", "--l needs a number, got 'lots'"),
        ("a --l -1", "--l needs a number ≥ 0"),
        ("a --d 1.5", "--d needs a whole number"),
        ("a --ss warp", "--ss needs one of ddim"),
        ("a --ar 16:9", "unknown option --ar"),
        ("a --w", "--w needs a value"),
    ],
)
def test_a_malformed_option_is_an_error_naming_line_and_option(line, message):
    with pytest.raises(PromptError, match=re.escape(message)) as caught:
        parse_prompts(f"# first line\n{line}")
    assert str(caught.value).startswith("line 2: ")


def test_the_run_seed_plus_the_index_seeds_a_prompt_without_d():
    assert SamplePrompt(2, "a").seed_for(40) == 42
    assert SamplePrompt(2, "a", seed=7).seed_for(40) == 7


# --- the payload edge ---------------------------------------------------------------------


def test_the_payload_refuses_a_bad_prompt_under_sample_prompts_with_its_line():
    payload = tiny_payload(sample_every_n_steps=1, sample_prompts="good\nbad --w abc\nworse --q 1")
    with pytest.raises(PayloadError) as caught:
        parse_payload(payload)
    found = [(p.field, p.message) for p in caught.value.problems]
    assert ("sample_prompts", "line 2: --w needs a whole number, got 'abc'") in found
    assert any(f == "sample_prompts" and m.startswith("line 3: unknown") for f, m in found)


def test_sampling_settings_that_make_no_image_are_warned_about():
    def warned(**overrides) -> set[tuple[str, str]]:
        warnings = parse_payload(tiny_payload(**overrides)).warnings
        return {(w.field, w.message) for w in warnings if w.field.startswith("sample")}

    assert warned(sample_every_n_steps=5, sample_prompts="# only a comment") == {
        ("sample_prompts", "has no prompt: sample_every_n_steps is set, but no image is made")
    }
    assert warned(sample_prompts="a cat") == {
        ("sample_prompts", "no image is made: set sample_every_n_epochs or sample_every_n_steps")
    }
    assert warned(sample_every_n_epochs=1, sample_every_n_steps=5, sample_prompts="a") == {
        ("sample_every_n_steps", "ignored: sample_every_n_epochs takes precedence")
    }
    assert warned(sample_every_n_steps=5, sample_prompts="a") == set()


# --- samplers -----------------------------------------------------------------------------


def test_every_sampler_name_of_the_registry_has_a_scheduler():
    assert set(SAMPLER_CLASSES) == set(KEYS["sample_sampler"].choices)


@pytest.mark.parametrize(
    ("names", "class_name", "algorithm"),
    [
        (("ddim",), "DDIMScheduler", None),
        (("pndm",), "PNDMScheduler", None),
        (("lms", "k_lms"), "LMSDiscreteScheduler", None),
        (("euler", "k_euler"), "EulerDiscreteScheduler", None),
        (("euler_a", "k_euler_a"), "EulerAncestralDiscreteScheduler", None),
        (("heun",), "HeunDiscreteScheduler", None),
        (("dpm_2", "k_dpm_2"), "KDPM2DiscreteScheduler", None),
        (("dpm_2_a", "k_dpm_2_a"), "KDPM2AncestralDiscreteScheduler", None),
        (("dpmsolver",), "DPMSolverMultistepScheduler", "dpmsolver"),
        (("dpmsolver++",), "DPMSolverMultistepScheduler", "dpmsolver++"),
        (("dpmsingle",), "DPMSolverSinglestepScheduler", None),
    ],
)
@pytest.mark.filterwarnings("ignore:.*dpmsolver.*:FutureWarning")
def test_a_sampler_name_gives_its_diffusers_scheduler_on_the_training_schedule(
    names, class_name, algorithm
):
    training = training_noise_scheduler().config
    for name in names:
        scheduler = build_sampler(name, training, v_prediction=False)
        assert type(scheduler).__name__ == class_name
        config = scheduler.config
        assert (config.beta_start, config.beta_end) == (0.00085, 0.012)
        assert (config.beta_schedule, config.num_train_timesteps) == ("scaled_linear", 1000)
        assert config.prediction_type == "epsilon"
        if algorithm is not None:
            assert config.algorithm_type == algorithm
        v_pred = build_sampler(name, training, v_prediction=True)
        assert v_pred.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("name", sorted(SAMPLER_CLASSES))
@pytest.mark.filterwarnings("ignore:.*dpmsolver.*:FutureWarning")
def test_every_sampler_runs_with_as_few_as_one_or_two_steps(name):
    # PNDM's Runge-Kutta warm-up needs 4+ steps; its PLMS form (skip_prk_steps) does not.
    for steps in (1, 2):
        scheduler = build_sampler(name, training_noise_scheduler().config, v_prediction=False)
        scheduler.set_timesteps(steps)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_output = 0.1 * scheduler.scale_model_input(x, t)
            kwargs = {"generator": generator} if _takes_generator(scheduler) else {}
            x = scheduler.step(model_output, t, x, **kwargs).prev_sample
        assert torch.isfinite(x).all()


def _takes_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


# --- when and where -----------------------------------------------------------------------


def test_step_sampling_every_n_steps_unless_an_epoch_interval_is_set():
    assert [s for s in range(1, 11) if due_after_step(None, 4, s)] == [4, 8]
    assert not any(due_after_step(1, 4, s) for s in range(1, 11))  # epochs win
    assert not any(due_after_step(None, None, s) for s in range(1, 11))


def test_epoch_sampling_every_n_epochs():
    assert [e for e in range(1, 7) if due_after_epoch(2, e)] == [2, 4, 6]
    assert not due_after_epoch(None, 2)


def test_sample_file_names_follow_kohya():
    stamp = "20240102030405"
    by_step = sample_file_name("toy", 1, step=5, epoch=None, stamp=stamp, seed=None)
    by_epoch = sample_file_name("toy", 0, step=10, epoch=2, stamp=stamp, seed=42)
    assert by_step == "toy_000005_01_20240102030405.png"
    assert by_epoch == "toy_e000002_00_20240102030405_42.png"


def test_eval_mode_turns_everything_off_and_restores_each_modules_own_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model.train()
    model[0].eval()  # a mixed state, as a partly frozen model can have
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, False, True]


# --- on the miniature SDXL ----------------------------------------------------------------

PROMPTS = """# toy samples
a red square --n blurry --w 64 --h 64 --s 2 --l 5 --d 7

a red square --n blurry --w 64 --h 64 --s 2 --l 5 --d 7 --ss euler
a blue circle --W 96 --H 64 --S 2
"""
SAMPLE_NAME = re.compile(r"toy_(e?\d{6})_(\d{2})_\d{14}(?:_(\d+))?\.png")


def _train(tiny_model: Path, toy_dataset: Path, out: Path, **overrides) -> list[Event]:
    """``tiny_payload`` + ``overrides``: without them it is conftest's ``trained_run``."""
    config = parse_payload(tiny_payload(**overrides)).config
    events: list[Event] = []
    train(TrainingJob(config, tiny_model, toy_dataset, out), reporter=events.append)
    return events


@pytest.fixture(scope="module")
def step_run(tiny_model, toy_dataset, tmp_path_factory) -> tuple[Path, list[Event]]:
    """10 steps (5 an epoch), samples after steps 5 and 10 with ddim unless --ss says."""
    out = tmp_path_factory.mktemp("step_samples")
    events = _train(
        tiny_model, toy_dataset, out,
        sample_every_n_steps=5, sample_sampler="ddim", sample_prompts=PROMPTS,
    )  # fmt: skip
    return out, events


def _samples(events: list[Event]) -> list[ArtifactSaved]:
    return [e for e in events if isinstance(e, ArtifactSaved) and e.kind == "sample"]


@pytest.mark.slow
@shows_effect("sample_every_n_steps", "sample_prompts")
def test_step_samples_are_pngs_with_their_settings_in_the_metadata(step_run):
    out, events = step_run
    samples = _samples(events)
    assert sorted(p.name for p in (out / "sample").iterdir()) == sorted(
        Path(a.path).name for a in samples
    )
    assert [(a.step, a.metadata["prompt"][:5]) for a in samples] == [
        (step, prompt) for step in (5, 10) for prompt in ("a red", "a red", "a blu")
    ]
    for artifact in samples:
        number, index, seed = SAMPLE_NAME.fullmatch(Path(artifact.path).name).groups()
        assert artifact.path.startswith("sample/") and number == f"{artifact.step:06d}"
        with Image.open(out / artifact.path) as image:
            image.load()
            text = dict(image.text)
        assert text.items() >= artifact.metadata.items()
        if index == "02":
            assert image.size == (96, 64) and seed is None
            assert text["seed"] == "44"  # the seed payload's 42 + the prompt's index 2
            assert (text["negative_prompt"], text["cfg_scale"]) == ("", "7.5")
        else:
            assert image.size == (64, 64) and seed == "7" == text["seed"]
            assert (text["prompt"], text["negative_prompt"]) == ("a red square", "blurry")
            assert (text["steps"], text["cfg_scale"]) == ("2", "5.0")
        assert f"Steps: 2, Sampler: {text['sampler']}" in text["parameters"]
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases.count("sampling") == 2
    assert all(phases[i + 1] == "training" for i, p in enumerate(phases) if p == "sampling")


@pytest.mark.slow
@shows_effect("sample_sampler")
def test_the_sampler_setting_and_a_prompts_ss_pick_the_scheduler(step_run):
    out, events = step_run
    at_five = [a for a in _samples(events) if a.step == 5]
    assert [a.metadata["sampler"] for a in at_five] == ["ddim", "euler", "ddim"]
    # The same prompt, size, steps, scale and seed: only the sampler differs.
    assert _pixels(out / at_five[0].path) != _pixels(out / at_five[1].path)


def _pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


@pytest.mark.slow
@shows_effect("sample_every_n_epochs")
def test_epoch_samples_win_over_steps_and_training_is_unchanged(
    step_run, trained_run, tiny_model, toy_dataset, tmp_path
):
    by_epoch = _train(
        tiny_model, toy_dataset, tmp_path / "epochs", sample_every_n_epochs=1,
        sample_every_n_steps=1, sample_prompts="a cat --w 64 --h 64 --s 2 --d 3",
    )  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "epochs" / "sample").iterdir())
    assert [SAMPLE_NAME.fullmatch(n).groups() for n in names] == [
        ("e000001", "00", "3"),
        ("e000002", "00", "3"),
    ]
    assert [(a.epoch, a.step) for a in _samples(by_epoch)] == [(1, 5), (2, 10)]
    # The same payload without sampling: the LoRA must not differ by a single bit.
    plain = load_file(str(trained_run.result.lora_path))
    for sampled in (step_run[0], tmp_path / "epochs"):
        lora = load_file(str(sampled / "toy.safetensors"))
        assert lora.keys() == plain.keys()
        assert all(torch.equal(lora[k], plain[k]) for k in plain)


# --- one sampling point on a session ------------------------------------------------------


@pytest.fixture(scope="module")
def session(tiny_model, toy_dataset, tmp_path_factory):
    """A training session with Kohya's LoRA dropouts on: sampling must not run them."""
    dropouts = dict(network_dropout=0.1, rank_dropout=0.1, module_dropout=0.1)
    prompts = "a cat --w 64 --h 64 --s 2"
    config = parse_payload(
        tiny_payload(**dropouts, sample_every_n_steps=1, sample_prompts=prompts)
    ).config
    job = TrainingJob(config, tiny_model, toy_dataset, tmp_path_factory.mktemp("session"))
    scan = scan_dataset(toy_dataset, config.caption_extension)
    return build_session(job, scan, plan_from_scan(config, scan), null_reporter, 42)


def test_sampling_runs_with_the_lora_dropouts_off_and_restores_every_mode(session, monkeypatch):
    def no_dropout_while_sampling(*args, **kwargs):
        raise AssertionError("a LoRA dropout hook ran while sampling")

    monkeypatch.setattr("trainer.lora.regularizers.drop_down_output", no_dropout_while_sampling)
    modes = {name: m.training for name, m in session.model.unet.named_modules()}
    assert any(modes.values())  # the UNet trains: it is in training mode
    rng_before = torch.get_rng_state()
    sample_if_due(session, null_reporter, step=1, epoch=1, epoch_end=False)
    assert {name: m.training for name, m in session.model.unet.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_seed_gives_the_same_image_every_time(session):
    prompt = parse_line("a cat --w 64 --h 64 --s 2", 0)
    with isolated_rng(session.device), eval_mode(session.model.unet):
        # euler_a draws fresh noise at every step too: from the image's own generator
        first, again, other = [render(session, prompt, "euler_a", seed) for seed in (5, 5, 6)]
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
