"""Read run directories (the format train.py writes, see docs/architecture.md) into plain records.

A run directory is found by its files: `summary.json`, `config.yaml`, `metrics.jsonl`, or the
`job_status.json` that the sweep callback writes when Hydra finishes a job (so a run that crashed before
train.py wrote anything is still listed). Nothing here needs torch or a model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlab.errors import UserError
from gptlab.rundir.files import read_json, read_yaml
from gptlab.rundir.layout import RunDir

RUN_MARKERS = (RunDir.SUMMARY, RunDir.CONFIG, RunDir.METRICS, "job_status.json")
JOB_STATUS_FILE = "job_status.json"
SKIP_DIRS = {".hydra", ".submitit", ".git", ".venv", "venv", "wandb", "heads", "__pycache__", "node_modules"}


@dataclass
class RunRecord:
    """Everything the summary needs about one run, read from its directory."""

    run_dir: Path
    status: str  # finished | running | failed | interrupted | incomplete (no summary.json, no evals)
    summary: dict = field(default_factory=dict)  # summary.json (may be empty)
    config: dict = field(default_factory=dict)  # config.yaml (may be empty)
    overrides: list[str] = field(default_factory=list)  # Hydra override strings of the run
    evals: list[dict] = field(default_factory=list)  # metrics.jsonl rows with kind == "eval"
    error: str | None = None  # why it failed, when known
    extrapolation: dict | None = None  # filled by sweep.extrapolate (or its cache)
    order: tuple = ()  # where the run came in its sweep: (index of the folder given, Hydra job number, path)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def value(self, key: str) -> Any:
        """A summary number, falling back to what metrics.jsonl shows (for runs that did not finish)."""
        v = self.summary.get(key)
        if v is not None:
            return v
        losses = [r["val_loss"] for r in self.evals if _is_number(r.get("val_loss"))]
        if key == "best_val_loss" and losses:
            return min(losses)
        if key == "final_val_loss" and losses:
            return losses[-1]
        if key == "step" and self.evals:
            return self.evals[-1].get("step")
        return None

    def config_value(self, key: str) -> Any:
        """The resolved value of a dotted key (`model.position`) in the run's config, or the override's."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = _MISSING
                break
            node = node[part]
        given = parse_overrides(self.overrides).get(key)
        if isinstance(node, dict):  # a config group choice (`model=small`): its name, not its whole content
            return given if given is not None else "(default)"
        return given if node is _MISSING else node

    def known(self, key: str) -> bool:
        """Whether the run says anything about `key` (a run that crashed before writing its config knows only
        its overrides)."""
        return bool(self.config) or key in parse_overrides(self.overrides)

    @property
    def seed(self) -> int | None:
        """The run's seed (weights, data order, dropout): its config's, or its override's; None if unknown."""
        v = self.config_value("seed") if self.known("seed") else None
        try:
            return None if v is None or isinstance(v, bool) else int(v)
        except (TypeError, ValueError):
            return None

    @property
    def time_to_target(self) -> dict:
        """summary.json's `time_to_target` (train.target_loss): {target_loss, step, tokens, wall_s}, or {}."""
        t = self.summary.get("time_to_target")
        return t if isinstance(t, dict) else {}


_MISSING = object()


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """`["model.position=alibi", "+experiment=positions"]` -> `{"model.position": "alibi", "experiment": ...}`."""
    out = {}
    for o in overrides:
        if "=" not in o:
            continue
        key, value = o.split("=", 1)
        out[key.lstrip("+~")] = value
    return out


def read_run(run_dir: str | Path) -> RunRecord:
    """Read one run directory; never raises for a half-written run (it is reported, not dropped)."""
    run_dir = Path(run_dir)
    layout = RunDir(run_dir)
    summary = layout.read_summary()
    job = read_json(run_dir / JOB_STATUS_FILE, {})
    config = layout.read_config()
    evals = layout.read_metrics("eval")

    overrides = summary.get("overrides") or job.get("overrides")
    if overrides is None:
        hydra_overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml")
        overrides = hydra_overrides if isinstance(hydra_overrides, list) else []
    overrides = [str(o) for o in overrides]

    status = summary.get("status")
    error = summary.get("error")
    hydra_cfg = read_yaml(run_dir / ".hydra" / "hydra.yaml")
    job_num = _job_num(hydra_cfg)
    if job.get("status") == "failed":
        # Hydra saw the job raise: train.py may not have recorded it (a crash before summary.json existed)
        status, error = "failed", error or job.get("error")
    if status is None:
        status = "running" if evals else "incomplete"
    return RunRecord(
        run_dir=run_dir,
        status=str(status),
        summary=summary,
        config=config,
        overrides=overrides,
        evals=evals,
        error=error,
        order=(0, job_num, str(run_dir)),
    )


def _job_num(hydra_cfg) -> float:
    """Hydra's job number of the run (its place in the sweep), or infinity when it is not known."""
    try:
        return int(hydra_cfg["hydra"]["job"]["num"])
    except (TypeError, KeyError, ValueError):
        return math.inf


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_MARKERS)


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run directory at or below `root` (a run dir, a sweep dir, or a folder of sweeps), sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(
            f"{root} is not a directory; pass a sweep directory (e.g. multirun/positions) or a run"
        )
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        p = Path(dirpath)
        if is_run_dir(p):
            found.append(p)
            dirnames[:] = []  # a run's own subfolders (heads/, .hydra/) are not runs
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
    return sorted(found)


def collect_runs(dirs: list[str | Path]) -> list[RunRecord]:
    """Read every run under each of `dirs` (duplicates removed); raise if there are none at all."""
    seen: set[Path] = set()
    runs = []
    for i, d in enumerate(dirs):
        for rd in find_run_dirs(d):
            key = rd.resolve()
            if key not in seen:
                seen.add(key)
                run = read_run(rd)
                run.order = (i, *run.order[1:])  # the sweeps in the order given, each in its job order
                runs.append(run)
    if not runs:
        names = " ".join(str(d) for d in dirs)
        raise UserError(f"no runs found under {names}; pass the sweep directory train.py -m wrote into")
    return runs
