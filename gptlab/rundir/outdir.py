"""Output folders: the one rule for where a tool may write (``out=``) and what it may replace there.

Used by every tool that takes an output folder: ``export.py out=``, ``heads.py out=``, ``compare.py -o`` and
``python -m data data.out_dir=``. A tool deletes or overwrites only what it wrote itself; a folder it made
carries a marker file, ``.gptlab-<tool>``, that says so. Refused, in one line, before anything is written:

- a path that is a file, not a folder;
- the filesystem root, the home directory or the checkout, or a folder that holds one of them;
- the source the tool reads (the run being exported or inspected), or a folder that holds it;
- a run directory (a folder with a run's files), unless the tool writes there by default;
- export, which replaces the folder as a whole: a non-empty folder without ``.gptlab-export`` (not an earlier
  export), one that holds a run directory, and any non-empty one without ``overwrite=true``;
- heads, compare and data, which write files of known names into the folder: a folder without the tool's
  marker that already holds a file of one of those names (it would be overwritten).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

from gptlab.errors import UserError

from .files import atomic_write
from .layout import RunDir

CHECKOUT = Path(__file__).resolve().parents[2]
# the files each tool writes into its folder (None: the folder is replaced as a whole)
WRITES: dict[str, tuple[str, ...] | None] = {
    "export": None,
    "heads": (
        "heads.*",
        "compare.*",
        "composition.*",
        "heatmap_*.png",
        "pattern*.png",
        "logit_lens.png",
        "heads_over_*",
    ),
    "compare": ("summary.md", "summary.csv", "val_loss_*.png", "loss_vs_eval_length.png"),
    "data": ("train.bin", "val.bin", "meta.json"),
}
TOOL_NAMES = {"export": "export.py", "heads": "heads.py", "compare": "compare.py", "data": "python -m data"}
EXAMPLE = {
    "export": "exports/<name>",
    "heads": "runs/<run>/heads",
    "compare": "comparison/",
    "data": "data/prepared/<name>",
}
RUN_FILES = (RunDir.CKPT, RunDir.BEST, RunDir.SUMMARY, RunDir.METRICS, RunDir.CONFIG)


def marker_name(tool: str) -> str:
    """The file that marks a folder as written by ``tool`` (``.gptlab-export``, ...)."""
    return f".gptlab-{tool}"


def is_run_dir(path: Path) -> bool:
    """True for a folder holding a run's files (a checkpoint, its summary, metrics or config)."""
    return any((path / name).is_file() for name in RUN_FILES)


def _run_dir_inside(path: Path) -> Path | None:
    """The first run directory at or below ``path``, or None."""
    for dirpath, dirnames, _ in os.walk(path):
        if is_run_dir(Path(dirpath)):
            return Path(dirpath)
        dirnames.sort()
    return None


def check_out_dir(
    out: str | Path,
    tool: str,
    option: str,
    *,
    sources: Iterable[str | Path] = (),
    overwrite: bool = False,
    own: bool = False,
    claim: bool = True,
) -> Path:
    """Check that ``tool`` may write into ``out`` (rules in the module docstring); returns ``out`` expanded.

    ``option`` is how the user named the folder (``out``, ``-o``, ``data.out_dir``), for the message.
    ``sources``: what the tool reads (a run directory, a checkpoint file). ``own``: ``out`` is the tool's own
    default place or an earlier output it recognises (e.g. a prepared folder's meta.json), marked or not.
    ``claim``: create the folder and its marker now (tools that write files into it; export marks the folder
    with :func:`mark_out_dir` once it has replaced it).
    """
    if tool not in WRITES:
        raise ValueError(f"unknown tool {tool!r}")
    path = Path(out).expanduser()
    shown = f"{option}={out}" if not option.startswith("-") else f"{option} {out}"
    if path.exists() and not path.is_dir():
        raise UserError(f"{shown} is a file; pass a folder (new or empty) to write into")
    real = path.resolve()
    for what, place in (("the home directory", Path.home()), ("the gptlab checkout", CHECKOUT)):
        place = place.resolve()
        if real == place or real in place.parents:
            how = "is" if real == place else "holds"
            raise UserError(f"{shown} {how} {what} ({place}); pass a folder of its own, e.g. {EXAMPLE[tool]}")
    if CHECKOUT.resolve() in real.parents and real.is_dir() and any(real.glob("*.py")):
        raise UserError(
            f"{shown} is a code folder of the checkout; pass a folder of its own, e.g. {EXAMPLE[tool]}"
        )
    for src in sources:
        s = Path(src).expanduser()
        if not s.exists():  # a hub id, say: nothing here to protect
            continue
        s = (s if s.is_dir() else s.parent).resolve()  # a checkpoint file: its run directory
        if s == real or real in s.parents:
            how = "is" if s == real else "holds"
            raise UserError(
                f"{shown} {how} {src}, which {TOOL_NAMES[tool]} reads; pass a folder of its own for the output"
            )
    if not path.is_dir() or not any(path.iterdir()):
        if claim:
            mark_out_dir(path, tool)
        return path
    marked = (path / marker_name(tool)).is_file()
    if not own and is_run_dir(path):
        raise UserError(f"{shown} is a run directory; pass a folder of its own for the output")
    names = WRITES[tool]
    if names is None:  # the folder is replaced as a whole
        if not marked:
            raise UserError(
                f"{shown} is not empty and was not written by {TOOL_NAMES[tool]} (no {marker_name(tool)} in it); "
                "it is never replaced: pass a new folder, or move its content away yourself"
            )
        run = _run_dir_inside(path)
        if run is not None:
            raise UserError(
                f"{shown} holds a run directory ({run}); it is never replaced: pass another folder"
            )
        if not overwrite:
            raise UserError(
                f"{shown} holds an earlier export; pass overwrite=true to replace it, or another out="
            )
        return path
    if not marked and not own:
        clash = sorted(p.name for p in path.iterdir() if any(fnmatch.fnmatch(p.name, n) for n in names))
        if clash:
            raise UserError(
                f"{shown} already holds {clash[0]}, which {TOOL_NAMES[tool]} did not write (no "
                f"{marker_name(tool)} there) and would overwrite; pass another folder, or move it away"
            )
    if claim:
        mark_out_dir(path, tool)
    return path


def mark_out_dir(out: str | Path, tool: str) -> Path:
    """Create ``out`` if needed and mark it as written by ``tool`` (an empty file ``.gptlab-<tool>``)."""
    path = Path(out).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    marker = path / marker_name(tool)
    if not marker.is_file():
        atomic_write(marker, f"written by {TOOL_NAMES[tool]}; it may replace what it wrote here\n")
    return path
