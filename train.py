"""Train a GPT: `python train.py [overrides]` (config: configs/config.yaml).

python train.py                                        # tiny model, Shakespeare chars, CPU, a few minutes
python train.py model=small train.device=cuda           # nanoGPT's shakespeare_char GPU recipe shape
python train.py model.position=alibi model.n_kv_head=1  # any model field: model.<field>=...
python train.py train.resume=true hydra.run.dir=runs/2026-11-22_10-00-00_123   # continue a run
torchrun --standalone --nproc_per_node=2 train.py        # DDP on 2 processes (gloo on CPU, NCCL on GPU)
python train.py -m +experiment=positions                # a sweep (see docs/sweeps.md)
python train.py -m +experiment=positions seeds=3        # each setting with seeds 0, 1, 2 (= seed=0,1,2)
"""

from __future__ import annotations

import signal
import sys

from gptlab.errors import quiet_ctrl_c_while_starting

if __name__ == "__main__":  # Ctrl-C while the libraries below load: one line, not an import traceback
    quiet_ctrl_c_while_starting()
    from gptlab.cli import exit_after_help

    exit_after_help("config", sys.argv[1:], __doc__)  # --help at once, before the slow imports

import os
from datetime import datetime

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gptlab.cli import prepare_argv
from gptlab.errors import UserError, exit_on_user_error
from gptlab.training.loop import train


def _run_id() -> str:
    """A run directory name unique per launch: the time to the millisecond, or under torchrun its run id
    (the same on every rank, so all ranks agree on one directory)."""
    torchrun_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if torchrun_id and torchrun_id != "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"{datetime.now():%Y-%m-%d}_ddp-{torchrun_id[:12]}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")[:-3]


if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", _run_id, use_cache=True)


def _run(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    summary = train(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task))
    if hc.mode == RunMode.MULTIRUN and summary.get("stop_reason") in ("SIGINT", "SIGTERM"):
        raise KeyboardInterrupt  # Ctrl-C stops the whole sweep, not just this run
    return summary.get("best_val_loss")  # what a Hydra sweeper optimises


class SweepJobError(UserError, CompactHydraException):
    """A sweep job's UserError. Hydra runs the other jobs, records this one as failed (the sweep summary lists
    it with the message), then re-raises the first failure and exits 1: as a CompactHydraException it prints
    the message alone, not a traceback."""


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return exit_on_user_error(_run)(cfg)  # a single run: one `error:` line, exit status 2
    try:
        return _run(cfg)
    except UserError as e:  # one line now, where the job failed; the other jobs still run
        print(
            f"error: {e} (sweep job {hc.job.num}, {hc.runtime.output_dir}); the sweep goes on",
            file=sys.stderr,
        )
        raise SweepJobError(str(e)) from None


if __name__ == "__main__":
    sys.argv[1:] = exit_on_user_error(prepare_argv)(
        "config", sys.argv[1:], __doc__
    )  # seeds=3 -> seed=0,1,2; Ctrl-C: still quiet
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt
        main()
    except KeyboardInterrupt:  # a second Ctrl-C, or a signal that stops a sweep: the loop said where it is
        print("stopped.", file=sys.stderr)
        sys.exit(130)
