"""What train.py does with its run directory: start, resume, skip, or refuse in one line.

A resumed run takes the config it was saved with. The only overrides a resume applies are those typed on the
resume's own command line, and only when they leave the experiment as it was (``SAFE_KEYS``: more iterations,
another device, logging); they are recorded in summary.json. An override that changes the model, the data,
the optimizer or the batch is refused with the list of differences. Nothing in the run directory is written
here: the caller acts on the plan once it is accepted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from gptlab.errors import UserError
from gptlab.rundir.checkpoint import load_checkpoint
from gptlab.rundir.layout import RunDir

from .config import RunConfig

# Overrides a resume may apply: they change how long, where and how visibly the run trains, not what it is.
SAFE_KEYS = {
    "train.max_iters",
    "train.device",
    "train.dtype",
    "train.compile",
    "train.deterministic",
    "train.threads",
    "train.log_interval",
    "train.eval_interval",
    "train.ckpt_interval",
    "train.stop_after_iters",
    "train.sample_tokens",
    "train.head_metrics_interval",
    "train.snapshots",
    "train.snapshots_max",
    "train.resume",
    "train.overwrite",
}
SAFE_PREFIXES = ("wandb.", "compare.")  # compare.*: how a sweep summary reads the runs


@dataclass
class Plan:
    action: str  # "start" | "resume" | "skip"
    config: dict  # the config the run goes on with (the saved one on resume, plus accepted overrides)
    ckpt: dict | None = None  # the checkpoint to resume from
    changes: list[str] = field(default_factory=list)  # accepted changes on resume, "key: old -> new"
    previous: dict = field(default_factory=dict)  # summary.json as found
    clear: bool = False  # the caller removes the old run files before starting
    written: bool = False  # set once the caller began writing the run directory for this plan
    cfg: RunConfig | None = None  # ``config`` typed: built here on a resume, by session.run_config on a start


def override_keys(overrides: list[str]) -> list[str]:
    """The config keys set on the command line (``a.b=1``, ``+a.b=1``, ``++a=1``), Hydra's own left out."""
    keys = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" in o and key and not key.startswith(("hydra.", "hydra/")):
            keys.append(key)
    return keys


def _select(tree: dict, key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _assign(tree: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (leaves only)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    out = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def is_safe(key: str) -> bool:
    return key in SAFE_KEYS or key.startswith(SAFE_PREFIXES)


def resumed_config(saved: dict, requested: dict, overrides: list[str]) -> tuple[dict, list[tuple]]:
    """The saved config with the command line's own overrides applied; and the differences they make."""
    effective = copy.deepcopy(saved)
    for key in override_keys(overrides):
        found, value = _select(requested, key)
        if found:
            _assign(effective, key, copy.deepcopy(value))
    return effective, differences(saved, effective)


def plan_run(run: RunDir, requested: dict, overrides: list[str]) -> Plan:
    """Decide what to do in ``run`` for the requested config (train.resume / train.overwrite) and overrides."""
    train = requested.get("train", {})
    resume, overwrite = train.get("resume", False), bool(train.get("overwrite", False))
    previous = run.read_summary()
    existing = run.existing_files()
    if resume is False:
        if existing and not overwrite:
            raise UserError(
                f"{run.path} already holds a run ({', '.join(existing)}); continue it with train.resume=true, "
                "start over with train.overwrite=true, or pass another hydra.run.dir"
            )
        return Plan("start", requested, previous=previous, clear=bool(existing))
    if not run.ckpt.is_file():
        if resume is True:
            raise UserError(
                f"train.resume=true but {run.path} has no ckpt.pt; point hydra.run.dir=<run dir> at the run "
                "to continue, or drop train.resume"
            )
        if previous.get("status") == "finished":  # auto: finished, but ckpt.pt is gone: leave it alone
            return Plan("skip", run.read_config() or requested, previous=previous)
        return Plan("start", requested, previous=previous, clear=bool(existing))  # nothing to resume

    ckpt = load_checkpoint(run.ckpt)
    saved = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else run.read_config() or requested
    config, diffs = resumed_config(saved, requested, overrides)
    refused = [d for d in diffs if not is_safe(d[0])]
    if refused:
        listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in refused)
        raise UserError(
            f"cannot resume {run.path} with settings that change the experiment ({listed}); drop those "
            "overrides to continue the run as it was saved, or start a new run in another hydra.run.dir"
        )
    cfg = RunConfig.from_mapping(config)  # the config the run goes on with, checked (one line if not)
    step, max_iters = int(ckpt.get("step", 0)), cfg.train.max_iters
    if max_iters < step:
        raise UserError(
            f"train.max_iters={max_iters} is below the checkpoint's step {step}; raise it to continue training"
        )
    changes = [
        f"{k}: {old!r} -> {new!r}" for k, old, new in diffs if k not in ("train.resume", "train.overwrite")
    ]
    if step >= max_iters and previous.get("status") == "finished":
        return Plan("skip", config, ckpt, changes, previous, cfg=cfg)
    return Plan("resume", config, ckpt, changes, previous, cfg=cfg)
