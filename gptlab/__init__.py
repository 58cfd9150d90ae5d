"""gptlab: the library behind the lab's tools (train.py, sample.py, heads.py, export.py, compare.py).

The checkout's top level holds the entry points, configs/ and the two packages the design card puts there,
model/ and data/. Everything else is in this package, under a name no user folder is likely to have, and the
library reaches model/ and data/ through it too, as ``gptlab.model`` and ``gptlab.data`` (gptlab/model and
gptlab/data are links to ../model and ../data). So the library never imports a top-level ``model`` or ``data``:
a notebook in a folder with its own model.py or data/ keeps them, and gets the lab with one import::

    import gptlab
    run = gptlab.load_run("runs/<run>")      # run.model, run.tokenizer, run.config

``pip install -e .`` makes ``import gptlab`` work from any folder (it installs this package's name and no
other); without it, append the checkout to ``sys.path`` (README, "Use from Python"). The names below are
imported on first use, so ``import gptlab`` costs nothing and the tools print --help before torch loads.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if not (Path(__file__).parent / "model").is_dir():  # pragma: no cover - a checkout made without symlinks
    # (git on Windows without core.symlinks writes each link as a small text file): find model/ and data/
    # in the checkout itself.
    __path__.append(str(Path(__file__).resolve().parents[1]))

_PUBLIC = {
    "load_run": "gptlab.open_run",
    "Run": "gptlab.rundir.load",
    "GPT": "gptlab.model",
    "GPTConfig": "gptlab.model",
    "UserError": "gptlab.errors",
}
__all__ = ["GPT", "GPTConfig", "Run", "UserError", "load_run"]  # = _PUBLIC

if TYPE_CHECKING:
    from gptlab.errors import UserError
    from gptlab.model import GPT, GPTConfig
    from gptlab.open_run import load_run
    from gptlab.rundir.load import Run


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'gptlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
