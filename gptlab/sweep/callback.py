"""Hydra callback: write the sweep summary (summary.md, summary.csv, plots) when a multirun ends.

Register it in a config (the experiment configs do):

    hydra:
      callbacks:
        sweep_summary:
          _target_: sweep.callback.SweepSummary
          extrapolate: true     # evaluate each finished run at 1x, 2x, 4x, 8x its block size

- `on_job_end` (in whichever process ran the job) writes `job_status.json` into the job's run directory,
  so a job that crashed before train.py wrote its summary is still listed as failed, with the error.
- `on_multirun_end` writes the summary into the sweep directory; the paired comparison is against
  `compare.baseline` of the sweep's config (null: the first setting). A baseline that is no setting, or
  settings that cannot be paired (different budgets), cost one warning line, never the summary.
- Hydra skips `on_multirun_end` when a job failed (it re-raises the job's error) or the sweep was
  interrupted; an exit handler then writes the summary anyway (for an interrupted sweep, without starting
  new length-extrapolation evaluations), so nothing finished is lost from the table.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gptlab.rundir.files import read_json, write_json
from gptlab.sweep.extrapolate import DEFAULT_MULTIPLIERS, DEFAULT_WINDOWS
from gptlab.sweep.runs import JOB_STATUS_FILE, collect_runs


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class SweepSummary(Callback):
    """Summarise a Hydra multirun into its sweep directory (see module docstring)."""

    def __init__(
        self,
        extrapolate: bool = True,
        windows: int = DEFAULT_WINDOWS,
        multipliers: Any = DEFAULT_MULTIPLIERS,
        device: str = "auto",
    ) -> None:
        self.extrapolate = bool(extrapolate)
        self.windows = int(windows)
        self.multipliers = tuple(int(m) for m in multipliers)
        self.device = str(device)
        self._sweep_dir: Path | None = None
        self._baseline: Any = None
        self._written = False
        self._exit_handler = False

    # ------------------------------------------------------------------ jobs
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Record the job's outcome in its run directory (best effort, never raises)."""
        try:
            out = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
            status = "finished" if job_return.status == JobStatus.COMPLETED else "failed"
            record = {"status": status, "overrides": list(job_return.overrides or [])}
            if status == "failed":
                record["error"] = _one_line(getattr(job_return, "_return_value", None) or RuntimeError())
            write_json(out / JOB_STATUS_FILE, record)
        except Exception as e:  # pragma: no cover - bookkeeping must not break a sweep
            print(f"warning: could not record the job status: {_one_line(e)}", file=sys.stderr)

    # ------------------------------------------------------------------ sweep
    def _read(self, config: DictConfig) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._baseline = OmegaConf.select(config, "compare.baseline", default=None)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._read(config)
        self._written = False
        if not self._exit_handler:
            atexit.register(self._write_if_missing)
            self._exit_handler = True

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._read(config)
        self.write(cached_only=False)

    def write(self, cached_only: bool) -> Path | None:
        """Write the summary now; on any error print one warning line and how to retry."""
        from gptlab.sweep.summary import print_table, summarize

        self._written = True
        d = self._sweep_dir
        if d is None or not d.is_dir():
            return None
        try:
            md = summarize(
                [d],
                extrapolate=self.extrapolate,
                multipliers=self.multipliers,
                windows=self.windows,
                device=self.device,
                cached_only=cached_only,
                baseline=self._baseline,
                strict=False,  # a finished sweep always gets its summary; a comparison problem is a warning
            )
        except Exception as e:
            print(
                f"warning: no sweep summary ({_one_line(e)}); retry with: python compare.py {d}",
                file=sys.stderr,
            )
            return None
        print(f"\nsweep summary: {md} (and summary.csv, runs.csv, comparison.csv, plots in {d})")
        print_table(md)
        return md

    def _write_if_missing(self) -> None:
        """Exit handler: the sweep ended without on_multirun_end (a job failed, or Ctrl-C)."""
        if self._written or self._sweep_dir is None or not self._sweep_dir.is_dir():
            return
        try:
            # Hydra re-raised a job's error only after running every job (on_job_end recorded it): the sweep is
            # complete, evaluate it fully. Otherwise it was interrupted (Ctrl-C skips on_job_end): start no
            # new evaluations, only show what is there.
            runs = collect_runs([self._sweep_dir])
            hydra_failed = any(
                read_json(r.run_dir / JOB_STATUS_FILE, {}).get("status") == "failed" for r in runs
            )
            self.write(cached_only=not hydra_failed)
        except (Exception, KeyboardInterrupt) as e:
            print(f"warning: no sweep summary ({_one_line(e)}); run: python compare.py {self._sweep_dir}")
