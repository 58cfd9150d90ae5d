"""The options of sample.py (configs/sample.yaml documents each) as one typed schema: ``Options``, built and
checked by ``parse_options(cfg)`` (gptlab.schema.from_mapping: unknown keys and types), ranges and choices in
``Options.__post_init__`` (so ``Options(run=...)`` built in Python is checked too)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gptlab.errors import UserError
from gptlab.model.generate import COMPILE_MODES
from gptlab.runtime.device import DTYPES
from gptlab.schema import check_counts, count, from_mapping, refuse, text

_NUMBER, _BOOL = {"expected": "a number"}, {"expected": "true or false"}  # null too: these words
_QUOTE = "quote it for Hydra: 'prompt=\"Hello, world\"'"


@dataclass
class Options:
    """The validated settings of one sampling call (configs/sample.yaml documents each)."""

    UNKNOWN_KEYS: ClassVar[str] = "unknown sample option(s) {unknown}; see configs/sample.yaml"

    run: str | None = text()  # required: __post_init__ refuses None and ""
    step: Any = None  # a step number, best or last (open_run resolves it)
    prompt: str | None = text(error=f"prompt must be one string; {_QUOTE}")  # None: default_prompt(run)
    prompt_file: str | None = text()  # "" is None
    num_samples: int = count(1, 1)
    max_new_tokens: int = count(500, 0)
    temperature: float = field(default=0.8, metadata=_NUMBER)
    top_k: int | None = count(200, 0)  # 0 is None: no limit
    top_p: float | None = field(default=None, metadata=_NUMBER)
    seed: int = count(1337, 0)
    use_cache: bool = field(default=True, metadata=_BOOL)
    compile: bool | str = field(
        default=False, metadata={"expected": f"true, false or one of {', '.join(COMPILE_MODES)}"}
    )
    device: str = text("auto")
    dtype: str = field(
        default="auto", metadata={"error": f"unknown dtype {{value!r}}; choose auto, {', '.join(DTYPES)}"}
    )
    stop_at_eot: bool = field(default=True, metadata=_BOOL)
    stream: bool | str = field(default="auto", metadata=_BOOL)  # auto: a bool after init
    echo_prompt: bool = field(default=True, metadata=_BOOL)
    separator: str = text("---------------")
    threads: int | None = count(None, 1)

    def __post_init__(self) -> None:
        if self.run in (None, ""):
            raise UserError("no run given; pass run=<run directory or checkpoint .pt file>")
        if self.prompt_file == "":
            self.prompt_file = None
        check_counts(self)
        if self.top_k == 0:
            self.top_k = None
        if not self.temperature >= 0 or self.temperature == math.inf:
            raise UserError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if isinstance(self.compile, str) and self.compile not in COMPILE_MODES:
            raise refuse(self, "compile", self.compile)
        if self.compile and not self.use_cache:
            raise UserError("compile=true compiles the KV-cached decode step; it needs use_cache=true")
        if isinstance(self.stream, str) and self.stream != "auto":
            raise refuse(self, "stream", self.stream)
        if self.stream is True and self.num_samples > 1:
            raise UserError(
                "stream=true needs num_samples=1; several samples are printed when the batch ends"
            )
        if self.stream == "auto":
            self.stream = self.num_samples == 1
        if self.dtype not in ("auto", *DTYPES):
            raise refuse(self, "dtype", self.dtype)


def parse_options(cfg: Mapping) -> Options:
    """Check every option (a Hydra config or a dict) and return them typed; anything wrong raises a one-line
    UserError."""
    values = {k: v for k, v in cfg.items() if k != "hydra"}
    return from_mapping(Options, values)
