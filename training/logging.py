"""Where a run's numbers go besides metrics.jsonl (rundir): the terminal (tqdm bar or plain lines) and wandb."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from gptlab_errors import UserError


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """A tqdm bar (loss, tokens/s, ETA) on a terminal; plain log lines otherwise (files, CI, SLURM)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.enabled = total, enabled
        self.bar = None

    def start(self, step: int) -> None:
        """Open the bar at `step` (a resumed run starts part way); before this, messages are plain lines."""
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=step, file=self.stream, dynamic_ncols=True, unit="it")

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, row: dict, eta_s: float | None = None) -> None:
        """Show a train row: on the bar's postfix, or as one line."""
        if not self.enabled:
            return
        parts = {
            "loss": f"{row['train_loss']:.4f}",
            "lr": f"{row['lr']:.2e}",
            "tok/s": f"{row['tokens_per_s'] / 1e3:.1f}k",
        }
        if row.get("mfu") is not None:
            parts["mfu"] = f"{100 * row['mfu']:.1f}%"
        if self.bar is not None:
            self.bar.set_postfix(parts, refresh=False)
        else:
            eta = f" | eta {_fmt_time(eta_s)}" if eta_s is not None else ""
            body = " | ".join(f"{k} {v}" for k, v in parts.items())
            self.print(f"step {row['step']:>6}/{self.total} | {body} | {row['ms_per_iter']:.1f} ms/it{eta}")

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Wandb:
    """wandb when wandb.mode is offline or online; nothing at all (not even the import) when disabled.
    The wandb run id is kept in the run directory so a resumed run continues the same wandb run."""

    def __init__(self, cfg: dict, run_dir: Path, config: dict, enabled: bool = True):
        self.run = None
        mode = cfg.get("mode", "disabled")
        if mode not in ("disabled", "offline", "online"):
            raise UserError(f"wandb.mode must be disabled, offline or online, got {mode!r}")
        if not enabled or mode == "disabled":
            return
        import wandb

        from rundir.files import atomic_write

        id_file = Path(run_dir) / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
        atomic_write(id_file, run_id)
        try:
            self.run = wandb.init(
                project=cfg.get("project"),
                entity=cfg.get("entity"),
                group=cfg.get("group"),
                name=cfg.get("name") or Path(run_dir).name,
                config=config,
                dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow",
            )
        except Exception as e:  # no API key, no network: one line, not a traceback
            raise UserError(
                f"wandb could not start in {mode} mode ({str(e).splitlines()[0][:100]}); "
                "use wandb.mode=offline or disabled, or run `wandb login`"
            ) from e

    def log(self, row: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=step
            )

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


class Stopwatch:
    """Wall time that excludes evaluation, for honest tokens/s.

    A GPU runs behind the host: a lap first waits for the work queued on ``device`` (CUDA), so the time
    counted is the time the steps took, not the time it took to queue them. Laps are taken only at log,
    evaluation and head-metric steps, never in between, so the steps themselves never wait for the host."""

    def __init__(self, device=None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.device = device
        self.start = time.perf_counter()
        self.mark = self.start

    def lap(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        dt, self.mark = now - self.mark, now
        return dt
