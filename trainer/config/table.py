"""``docs/parameters.md``: the parameter table, generated from the registry.

``python -m trainer.config.table`` rewrites the files derived from the registry:
this table and ``trainer/config/typed.py`` (the fields of ``TrainingConfig`` as
mypy sees them, :func:`trainer.config.fields.render_stub`); ``--check`` exits 1
when either is stale. The tests compare both with their renderers, so neither
can drift from the registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.config.fields import render_stub
from trainer.config.keys import ALIASES, KEYS
from trainer.config.spec import KeySpec, Status

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"
STUB_PATH = Path(__file__).resolve().with_name("typed.py")

_HEADER = """\
# Kohya payload parameters

Generated from the payload registry (`trainer/config/keys_core.py`,
`trainer/config/keys_more.py`) by `python -m trainer.config.table`; do not edit
by hand. A test fails when this file and the registry disagree.

Every key of kohya_ss v24.1.7's LoRA config (the seed payload's 140 keys, the 17
it dropped, and four sd-scripts spellings) has one of three statuses:

* **honoured**: the trainer implements it as kohya_ss / sd-scripts do; a test
  shows that a non-default value changes the run (or, where noted, that every
  value trains the same by design);
* **server**: accepted and validated, but owned by the server (paths, launch
  settings, trackers, uploads); the trainer never reads it;
* **refused**: accepted at its default value only; any other value is a
  problem carrying the reason shown.

"0 / empty means unset" follows the GUI (it drops `0` and `""` before sd-scripts
sees them): such a value means the sd-scripts default shown in the meaning.
"""

_STATUS_TEXT = {Status.HONOURED: "honoured", Status.HOST: "server", Status.REFUSED: "refused"}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(spec: KeySpec) -> str:
    if isinstance(spec.default, str):
        return f'`"{spec.default}"`'
    if isinstance(spec.default, bool):
        return "`true`" if spec.default else "`false`"
    return f"`{spec.default}`"


def _type(spec: KeySpec) -> str:
    names = {
        "bool": "bool",
        "int": "int",
        "float": "float",
        "str": "text",
        "choice": "choice",
        "ext": "text (extension)",
        "resolution": 'text "W,H"',
        "args": 'text "k=v k=v"',
        "attention": "choice or bool",
    }
    return names[spec.kind]


def _range(spec: KeySpec) -> str:
    text = spec.range_text()
    return _cell(text) if text else "—"


def _status(spec: KeySpec) -> str:
    status = _STATUS_TEXT[spec.status]
    if spec.status is Status.HONOURED:
        if spec.same_result:
            return f"honoured; every value trains the same: {spec.same_result}"
        if spec.supported is not None:
            values = ", ".join(repr(v) for v in spec.supported)
            return f"honoured for {values}; other values refused: {spec.reason}"
        return status
    return f"{status}: {spec.reason}"


def _row(spec: KeySpec) -> str:
    cells = (
        f"`{spec.key}`",
        _cell(spec.meaning),
        _type(spec),
        _range(spec),
        _default(spec),
        _cell(_status(spec)),
    )
    return "| " + " | ".join(cells) + " |"


def _section(title: str, specs: list[KeySpec]) -> list[str]:
    lines = [f"## {title} ({len(specs)})", ""]
    lines.append("| key | meaning | type | range | default | status |")
    lines.append("|---|---|---|---|---|---|")
    lines.extend(_row(spec) for spec in specs)
    lines.append("")
    return lines


def render() -> str:
    """The whole Markdown document for the current registry."""
    by_status: dict[Status, list[KeySpec]] = {status: [] for status in Status}
    for spec in KEYS.values():
        by_status[spec.status].append(spec)
    lines = [_HEADER]
    lines += _section("Honoured", by_status[Status.HONOURED])
    lines += _section("Owned by the server", by_status[Status.HOST])
    lines += _section("Refused", by_status[Status.REFUSED])
    lines += ["## Other spellings (aliases)", "", "| spelling | key |", "|---|---|"]
    lines += [f"| `{alias.name}` | `{alias.key}` |" for alias in ALIASES.values()]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DOC_PATH)
    parser.add_argument("--stub-out", type=Path, default=STUB_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    outputs = {args.out: render(), args.stub_out: render_stub()}
    if args.check:
        stale = [path for path, text in outputs.items() if _read(path) != text]
        for path in stale:
            print(f"{path} is stale: run python -m trainer.config.table", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} and {args.stub_out} ({len(KEYS)} keys)")
    return 0


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


if __name__ == "__main__":
    raise SystemExit(main())
