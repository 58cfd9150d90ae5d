"""Where a run's numbers go besides metrics.jsonl (rundir): the terminal (tqdm bar or plain lines), the
``gptlab`` logger, and wandb.

Every line the loop shows also goes to the ``gptlab`` logger at INFO. Under train.py, Hydra's job logging
(configs/config.yaml) sends it to ``<run>/train.log`` with a time stamp and keeps it off the terminal, which
already has the line; called from Python without a logging setup, the logger writes nothing.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import string
import sys
from pathlib import Path

from gptlab.errors import UserError

from .config import WandbConfig

log = logging.getLogger("gptlab")


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
        eta = f" | eta {_fmt_time(eta_s)}" if eta_s is not None else ""
        body = " | ".join(f"{k} {v}" for k, v in parts.items())
        line = f"step {row['step']:>6}/{self.total} | {body} | {row['ms_per_iter']:.1f} ms/it{eta}"
        if self.bar is not None:
            self.bar.set_postfix(parts, refresh=False)
            log.info(line)  # the log file gets every row, the bar only its postfix
        else:
            self.print(line)

    def print(self, msg: str) -> None:
        """A message on the terminal (stderr, above the bar) and in the log."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)
        log.info(msg)

    def result(self, msg: str) -> None:
        """A line of the run's result on stdout (what a script captures) and in the log."""
        if not self.enabled:
            return
        print(msg, flush=True)
        log.info(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Wandb:
    """wandb when wandb.mode is offline or online; nothing at all (not even the import) when disabled.

    Only wandb's public API is used (``wandb.init``, ``run.log``, ``run.finish``). The run id is made here and
    kept in the run directory (``wandb_id.txt``), so a resumed run continues the same wandb run
    (``wandb.init(id=..., resume="allow")``). wandb failing to start is one line, and leaves nothing of its own
    behind in a fresh run directory; wandb failing later costs the run one warning, never the run itself.
    """

    ID_FILE = "wandb_id.txt"

    def __init__(self, cfg: WandbConfig, run_dir: Path, config: dict, enabled: bool = True, stream=None):
        self.run = None
        self.stream = stream or sys.stderr
        mode = cfg.mode
        if not enabled or mode == "disabled":
            return
        from gptlab.rundir.files import atomic_write

        id_file, wandb_dir = Path(run_dir) / self.ID_FILE, Path(run_dir) / "wandb"
        had_dir = wandb_dir.exists()
        run_id = id_file.read_text().strip() if id_file.exists() else new_run_id()
        atomic_write(id_file, run_id)
        try:
            import wandb

            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=cfg.group,
                name=cfg.name or Path(run_dir).name,
                config=config,
                dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow",
            )
        except Exception as e:  # no API key, no network, an incompatible wandb: one line, not a traceback
            if not had_dir:  # what wandb began to write for this run, so a retry starts clean
                shutil.rmtree(wandb_dir, ignore_errors=True)
            raise UserError(
                f"wandb could not start in {mode} mode ({type(e).__name__}: {_first_line(e)}); "
                "use wandb.mode=offline or disabled, or run `wandb login`"
            ) from None

    def log(self, row: dict, step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(
                {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=step
            )
        except Exception as e:
            self._give_up("log", e)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as e:
            self._give_up("finish", e)
        self.run = None

    def _give_up(self, what: str, e: Exception) -> None:
        """wandb failed mid-run: say so once and train on without it (metrics.jsonl has every number)."""
        self.run = None
        print(
            f"warning: wandb failed to {what} ({type(e).__name__}: {_first_line(e)}); training goes on "
            "without wandb (metrics.jsonl has every number)",
            file=self.stream,
            flush=True,
        )


def new_run_id() -> str:
    """A wandb run id: 8 characters of [a-z0-9], as wandb makes them (made here: wandb's helper is not public)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:100] if text else ""
