"""The options of sample.py (configs/sample.yaml documents each), checked and typed: ``parse_options(cfg)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gptlab.errors import UserError
from gptlab.model.generate import COMPILE_MODES
from gptlab.runtime.device import DTYPES


@dataclass
class Options:
    """The validated settings of one sampling call (configs/sample.yaml documents each)."""

    run: str
    step: Any = None  # a step number, best or last (open_run resolves it)
    prompt: str | None = None  # None: default_prompt(run)
    prompt_file: str | None = None
    num_samples: int = 1
    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    seed: int = 1337
    use_cache: bool = True
    compile: bool | str = False
    device: str = "auto"
    dtype: str = "auto"
    stop_at_eot: bool = True
    stream: bool | str = "auto"
    echo_prompt: bool = True
    separator: str = "---------------"
    threads: int | None = None


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    return float(value)


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


def parse_options(cfg: DictConfig | dict) -> Options:
    """Check every option and return them typed; anything wrong raises a one-line UserError."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c.pop("hydra", None)
    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(c) - known)
    if unknown:
        raise UserError(f"unknown sample option(s) {unknown}; see configs/sample.yaml")
    if c.get("run") in (None, ""):
        raise UserError("no run given; pass run=<run directory or checkpoint .pt file>")
    o = Options(**c)
    o.run = str(o.run)
    if isinstance(o.prompt, (list, dict)):
        raise UserError("prompt must be one string; quote it for Hydra: 'prompt=\"Hello, world\"'")
    o.prompt = None if o.prompt is None else str(o.prompt)
    o.prompt_file = None if o.prompt_file in (None, "") else str(o.prompt_file)
    o.num_samples = _as_int("num_samples", o.num_samples, 1)
    o.max_new_tokens = _as_int("max_new_tokens", o.max_new_tokens, 0)
    o.seed = _as_int("seed", o.seed, 0)
    o.temperature = _as_float("temperature", o.temperature)
    if not o.temperature >= 0 or o.temperature == float("inf"):
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {o.temperature}")
    if o.top_k in (None, 0):
        o.top_k = None
    else:
        o.top_k = _as_int("top_k", o.top_k, 0)
    if o.top_p is not None:
        o.top_p = _as_float("top_p", o.top_p)
        if not 0.0 < o.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1] (1 = off), got {o.top_p}")
    for name in ("use_cache", "stop_at_eot", "echo_prompt"):
        setattr(o, name, _as_bool(name, getattr(o, name)))
    if not isinstance(o.compile, bool) and o.compile not in COMPILE_MODES:
        raise UserError(
            f"compile must be true, false or one of {', '.join(COMPILE_MODES)}, got {o.compile!r}"
        )
    if o.compile and not o.use_cache:
        raise UserError("compile=true compiles the KV-cached decode step; it needs use_cache=true")
    if o.stream != "auto":
        o.stream = _as_bool("stream", o.stream)
    if o.stream is True and o.num_samples > 1:
        raise UserError("stream=true needs num_samples=1; several samples are printed when the batch ends")
    o.stream = o.num_samples == 1 if o.stream == "auto" else o.stream
    if o.dtype not in ("auto", *DTYPES):
        raise UserError(f"unknown dtype {o.dtype!r}; choose auto, {', '.join(DTYPES)}")
    o.separator = str(o.separator)
    if o.threads is not None:
        o.threads = _as_int("threads", o.threads, 1)
    return o
