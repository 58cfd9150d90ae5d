"""The training loop, in the pieces a reader looks for: set up, one optimizer step, evaluate, checkpoint, finish.

    train(cfg, run_dir, overrides)   plan (start / resume / skip), lock the run directory, set up, fit
    setup(...)  -> Session           device, data, model, optimizer, loader, eval batches, logging
    train_step(s)                    one optimizer step: grad_accum micro-batches, clip, step (no host sync)
    evaluate(s) -> {train, val}      mean loss on fixed batches of each split
    save(s, path)                    a checkpoint, refused for non-finite weights
    fit(s)                           the loop: step, log, evaluate, checkpoint, stop on a signal
    finish(s)                        summary, loss curves, a sample

Order of one optimizer step: set the learning rate, run ``grad_accum`` micro-batches (forward under autocast,
backward through the gradient scaler; DDP syncs gradients on the last one only), unscale, clip, step. The
loss and gradient norm stay on the device and are read only at log, evaluation and checkpoint steps, so a
GPU is never made to wait for the host in between. Everything a bit-exact resume needs is in the checkpoint.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data import BatchLoader, DataConfig, get_tokenizer, load_meta, prepare
from gptlab_errors import DISK_FULL, UserError
from interp.tracking import head_metrics_snapshot
from model import GPT, GPTConfig
from rundir.checkpoint import NonFiniteWeights, first_line, model_state, save_checkpoint
from rundir.files import remove_stale_temps
from rundir.layout import RunDir
from rundir.load import shape_mismatch

from .config import OptimConfig, TrainConfig, from_mapping
from .ddp import Dist, init_distributed, shutdown
from .device import autocast, enable_tf32, grad_scaler, pick_device, pick_dtype, warn_slow_dtype
from .logging import Progress, Stopwatch, Wandb
from .mfu import mfu, peak_flops
from .optim import build_optimizer, lr_at
from .plot import plot_losses
from .resume import Plan, plan_run
from .rng import get_rng_state, seed_everything, set_rng_state
from .signals import StopFlag


class Diverged(Exception):
    """The loss (or a weight) stopped being finite."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step}")


class Divergence:
    """The first step whose loss was not finite, tracked on the device and read only at sync points."""

    def __init__(self, device: torch.device):
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        new = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(new, torch.full_like(self.step, step), self.step)
        self.value = torch.where(new, loss.detach().float(), self.value)

    def check(self) -> None:
        step = int(self.step)
        if step >= 0:
            raise Diverged(step, float(self.value))


@dataclass
class Session:
    """Everything one training run holds between its steps."""

    cfg: DictConfig
    tcfg: TrainConfig
    ocfg: OptimConfig
    run: RunDir
    dist: Dist
    device: torch.device
    dtype: torch.dtype
    meta: dict
    mcfg: GPTConfig
    raw_model: GPT
    model: torch.nn.Module  # raw_model, possibly compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: Any  # data.BatchLoader
    eval_batches: dict
    summary: dict
    progress: Progress
    wandb: Wandb
    stop: StopFlag
    step: int = 0
    best_val: float = math.inf
    saved_step: int | None = None  # step of the last ckpt.pt written (or resumed from)
    steps_this_call: int = 0
    tokens_per_step: int = 0
    flops_per_token: int = 0
    peak: float | None = None
    divergence: Divergence | None = None
    last: dict = field(default_factory=dict)  # the last step's loss and grad norm (device tensors)
    last_eval: dict | None = None

    @property
    def main(self) -> bool:
        return self.dist.is_main


# ------------------------------------------------------------------------------------------------ entry
def train(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Train, resume, or skip a finished run in ``run_dir``; returns the run's summary dict."""
    run, overrides = RunDir(run_dir), list(overrides or [])
    requested = OmegaConf.to_container(cfg, resolve=True)
    is_main = int(os.environ.get("RANK", "0")) == 0
    stop = StopFlag().install()
    try:
        with run.lock() if is_main else nullcontext():
            plan = plan_run(run, requested, overrides)
            if plan.action == "skip":
                return _skip(run, plan, is_main)
            s = setup(plan, run, overrides, stop)
            try:
                return fit(s)
            finally:
                shutdown(s.dist)
    except KeyboardInterrupt:
        print(
            f"interrupted; the last checkpoint in {run.path} is kept. Continue with: "
            f"python train.py train.resume=true hydra.run.dir={run.path}",
            file=sys.stderr,
        )
        raise
    except OSError as e:
        if e.errno in DISK_FULL:
            _mark(run, is_main, status="failed", error="disk full")
            raise UserError(
                f"no space left on the device (writing {e.filename or run.path}); free some space, then "
                f"continue with: python train.py train.resume=true hydra.run.dir={run.path}"
            ) from None
        raise
    finally:
        stop.restore()


def _skip(run: RunDir, plan: Plan, is_main: bool) -> dict:
    step = plan.previous.get("step")
    print(f"run in {run.path} already finished (step {step}); skipping (raise train.max_iters to train on)")
    if is_main and not run.loss_png.exists():  # a hard kill right after "finished": make the curves now
        plot_losses(run.read_metrics(), run.loss_png, title=run.path.name)
    return plan.previous


def _mark(run: RunDir, is_main: bool, **fields) -> None:
    """Best-effort summary update when something failed (the disk may be full)."""
    if not is_main or not run.summary.exists():
        return
    try:
        run.write_summary({**run.read_summary(), **fields})
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------ set up
def _model_config(cfg_model: dict, meta: dict) -> GPTConfig:
    values = dict(cfg_model)
    vocab = int(meta["vocab_size"])
    if values.get("vocab_size") is None:
        values["vocab_size"] = vocab
    elif values["vocab_size"] < vocab:
        raise UserError(
            f"model.vocab_size={values['vocab_size']} is smaller than the data's vocabulary ({vocab}); "
            "set model.vocab_size=null"
        )
    return from_mapping(GPTConfig, values, "model")


def _validated(config: dict) -> tuple[TrainConfig, OptimConfig, DataConfig, int]:
    """The train, optim and data sections and the seed, checked; the model too (its vocab comes later)."""
    seed = config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    tcfg = from_mapping(TrainConfig, dict(config["train"]), "train")
    ocfg = from_mapping(OptimConfig, dict(config["optim"]), "optim")
    dcfg = from_mapping(DataConfig, dict(config["data"]), "data")
    _model_config(config["model"], {"vocab_size": 1})
    return tcfg, ocfg, dcfg, seed


def _prepare_run_dir(run: RunDir, plan: Plan, say: Progress) -> None:
    """Rank 0, once the plan is accepted: clear or trim the old files and write the config."""
    run.path.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run.path)  # left by a kill during an atomic write
    if plan.clear:
        gone = run.remove_run_files()
        say.print(f"starting over in {run.path}: removed the previous run's {', '.join(gone)}")
    if plan.ckpt is not None:
        run.truncate_metrics(int(plan.ckpt["step"]))
    run.write_config(plan.config)


def setup(plan: Plan, run: RunDir, overrides: list[str], stop: StopFlag) -> Session:
    """Everything before the first step. Rank 0 alone writes to the run directory."""
    cfg = OmegaConf.create(plan.config)
    tcfg, ocfg, dcfg, seed = _validated(plan.config)  # every section, before anything is written
    device = pick_device(tcfg.device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    say = Progress(tcfg.max_iters, enabled=dist.is_main)
    if dist.is_main:
        _prepare_run_dir(run, plan, say)
        for change in plan.changes:
            say.print(f"resume: {change}")
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    seed_everything(seed)
    enable_tf32()

    data_dir = prepare(dcfg) if dist.is_main else None
    dist.barrier()
    data_dir = data_dir or prepare(dcfg)
    meta = load_meta(data_dir)

    mcfg = _model_config(plan.config["model"], meta)
    dtype = pick_dtype(tcfg.dtype, device, cpu_bf16_pays=mcfg.attn_impl == "explicit")
    warn_slow_dtype(dtype, device)
    raw_model = GPT(mcfg).to(device)
    optimizer = build_optimizer(raw_model, ocfg, device.type)
    scaler = grad_scaler(device, dtype)
    B, T = tcfg.batch_size, mcfg.block_size
    loader = BatchLoader(
        data_dir / "train.bin", block_size=T, batch_size=B, seed=seed,
        rank=dist.rank, world_size=dist.world_size, device=device,
    )  # fmt: skip
    step, best_val, ckpt = 0, math.inf, plan.ckpt
    if ckpt is not None:
        _restore(ckpt, raw_model, optimizer, scaler, loader, run)
        step, best_val = int(ckpt["step"]), float(ckpt.get("best_val_loss") or math.inf)
        say.print(f"resumed {run.path} at step {step}")
    model = torch.compile(raw_model) if tcfg.compile else raw_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # the same eval_iters batches of each split at every evaluation (and after a resume), built once
    eval_batches = {
        split: BatchLoader(
            data_dir / f"{split}.bin", block_size=T, batch_size=B, seed=seed + 1,
            rank=dist.rank, world_size=dist.world_size, device=device,
        ).fixed_batches(tcfg.eval_iters)
        for split in ("train", "val")
    }  # fmt: skip
    summary = _start_summary(plan, raw_model, tcfg, overrides, device, dtype, dist, step, best_val)
    s = Session(
        cfg=cfg, tcfg=tcfg, ocfg=ocfg, run=run, dist=dist, device=device, dtype=dtype, meta=meta, mcfg=mcfg,
        raw_model=raw_model, model=model, optimizer=optimizer, scaler=scaler, loader=loader,
        eval_batches=eval_batches, summary=summary, progress=say,
        wandb=Wandb(plan.config.get("wandb", {}), run.path, plan.config, enabled=dist.is_main),
        stop=stop, step=step, best_val=best_val, saved_step=step if ckpt is not None else None,
        tokens_per_step=B * T * tcfg.grad_accum * dist.world_size,
        flops_per_token=raw_model.flops_per_token(T), peak=peak_flops(device, dtype),
        divergence=Divergence(device),
    )  # fmt: skip
    if s.main:
        run.write_summary(summary)
        say.print(
            f"run dir {run.path} | {summary['params'] / 1e6:.2f}M params | {device} {summary['dtype']} | "
            f"{s.tokens_per_step} tokens/step | data {data_dir}"
        )
    return s


def _restore(ckpt: dict, model, optimizer, scaler, loader, run: RunDir) -> None:
    """Load a checkpoint's states; a mismatch (another model or data) is one line, not a traceback."""
    state = model_state(ckpt)
    problem = shape_mismatch({k: v.shape for k, v in model.state_dict().items()}, state)
    try:
        if problem:
            raise ValueError(problem)
        model.load_state_dict(state)
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(
            f"{run.ckpt} does not fit this model ({first_line(e)}); the checkpoint is from another "
            "architecture or gptlab version: resume with the settings it was saved with, or start a new run"
        ) from None
    if "scaler" in ckpt and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    loader.load_state_dict(ckpt["loader"])
    set_rng_state(ckpt["rng"])


def _start_summary(plan, raw_model, tcfg, overrides, device, dtype, dist, step, best_val) -> dict:
    resumed = plan.ckpt is not None
    old = plan.previous if resumed else {}
    summary = {
        **old,  # a resume keeps what the run recorded before (final loss, speed, its original overrides)
        "status": "running",
        "step": step,
        "max_iters": tcfg.max_iters,
        "params": raw_model.num_params(),
        "best_val_loss": None if math.isinf(best_val) else best_val,
        "final_val_loss": old.get("final_val_loss"),
        "tokens_per_s": old.get("tokens_per_s"),
        "wall_s": old.get("wall_s", 0.0),
        "kv_cache_bytes_per_token": raw_model.kv_cache_bytes_per_token(),
        "overrides": old.get("overrides", list(overrides)),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "world_size": dist.world_size,
    }
    summary.pop("stop_reason", None)
    summary.pop("error", None)
    if resumed:
        summary["resumes"] = [
            *old.get("resumes", []),
            {"step": step, "overrides": overrides, "changes": plan.changes},
        ]
    return summary


# ------------------------------------------------------------------------------------------------ one step
def train_step(s: Session) -> None:
    """One optimizer step; leaves the loss and gradient norm on the device in ``s.last``."""
    tcfg = s.tcfg
    lr = lr_at(s.step, s.ocfg, tcfg.max_iters)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=s.device)
    for micro in range(tcfg.grad_accum):
        x, y = s.loader.next()
        if s.dist.enabled:
            s.model.require_backward_grad_sync = micro == tcfg.grad_accum - 1
        with autocast(s.device, s.dtype):
            _, loss = s.model(x, y)
        s.scaler.scale(loss / tcfg.grad_accum).backward()
        loss_sum += loss.detach()
    grad_norm = None
    if tcfg.grad_clip > 0:
        s.scaler.unscale_(s.optimizer)  # clip the true gradients (a no-op without float16)
        grad_norm = torch.nn.utils.clip_grad_norm_(s.raw_model.parameters(), tcfg.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    train_loss = loss_sum / tcfg.grad_accum
    s.divergence.update(train_loss, s.step)
    s.last = {"loss": train_loss, "grad_norm": grad_norm, "lr": lr}
    s.step += 1
    s.steps_this_call += 1


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(s: Session) -> dict[str, float]:
    """Mean loss on the fixed evaluation batches of each split (averaged over ranks)."""
    s.model.eval()
    out = {}
    with torch.no_grad():
        for split, batches in s.eval_batches.items():
            total = 0.0
            for x, y in batches:
                with autocast(s.device, s.dtype):
                    _, loss = s.raw_model(x, y)
                total += loss.item()
            out[split] = s.dist.mean(total / len(batches), s.device)
    s.model.train()
    return out


# ------------------------------------------------------------------------------------------------ checkpoint
def save(s: Session, path: Path) -> None:
    """Write a checkpoint of the state after ``s.step`` steps (rank 0). Diverged weights are never saved."""
    s.divergence.check()
    if not s.main:
        return
    try:
        save_checkpoint(
            path,
            model=s.raw_model.state_dict(),
            model_config=asdict(s.mcfg),
            optimizer=s.optimizer.state_dict(),
            scaler=s.scaler.state_dict() if s.scaler.is_enabled() else None,
            step=s.step,
            best_val_loss=None if math.isinf(s.best_val) else s.best_val,
            rng=get_rng_state(),
            loader=s.loader.state_dict(),
            config=OmegaConf.to_container(s.cfg, resolve=True),
            tokenizer=s.meta,
        )
    except NonFiniteWeights:
        raise Diverged(s.step, float("nan")) from None
    if path == s.run.ckpt:
        s.saved_step = s.step


# ------------------------------------------------------------------------------------------------ the loop
def fit(s: Session) -> dict:
    """Train from ``s.step`` to ``train.max_iters`` (or until a signal), then finish."""
    tcfg, say = s.tcfg, s.progress
    watch, wall_start, wall_before = Stopwatch(), time.perf_counter(), s.summary["wall_s"]
    elapsed = lambda: wall_before + time.perf_counter() - wall_start  # noqa: E731
    lap_steps, lap_time = 0, 0.0
    head_every = tcfg.head_metrics_interval if s.main else 0
    s.model.train()
    say.start(s.step)
    try:
        while s.step < tcfg.max_iters:
            train_step(s)
            lap_steps += 1
            say.step()
            step = s.step
            if step % tcfg.log_interval == 0 or step == tcfg.max_iters:
                _train_row(s, lap_steps, lap_time + watch.lap(), elapsed())
                lap_steps, lap_time = 0, 0.0
            is_eval = step % tcfg.eval_interval == 0 or step == tcfg.max_iters
            if is_eval:
                lap_time += watch.lap()
                _eval_row(s, elapsed())
                watch.lap()  # evaluation time is not training time
            if head_every and step % head_every == 0:
                lap_time += watch.lap()
                _heads_row(s)
                watch.lap()
            ckpt_due = (step % tcfg.ckpt_interval == 0) if tcfg.ckpt_interval else is_eval
            stopping = s.stop.requested or (
                tcfg.stop_after_iters and s.steps_this_call >= tcfg.stop_after_iters
            )
            if ckpt_due or stopping or step == tcfg.max_iters:
                save(s, s.run.ckpt)
                s.summary.update(step=step, wall_s=elapsed())
                if s.main:
                    s.run.write_summary(s.summary)
            if stopping and step < tcfg.max_iters:
                return _stopped(s, s.stop.requested or f"train.stop_after_iters={tcfg.stop_after_iters}")
        s.divergence.check()
    except Diverged as e:
        _record(s, status="failed", error=str(e))
        kept = (
            f"the last good checkpoint (step {s.saved_step}) is kept in {s.run.path}"
            if s.saved_step is not None
            else f"no checkpoint was saved before it ({s.run.path})"
        )
        raise UserError(f"{e}; stopped. {kept}; lower optim.lr or keep train.grad_clip on") from None
    except BaseException as e:
        _record(s, status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    finally:
        say.close()
        s.wandb.finish()
    return finish(s, elapsed())


def _train_row(s: Session, lap_steps: int, lap_time: float, elapsed: float) -> None:
    """Read the step's numbers off the device (the one sync per log interval) and log them."""
    s.divergence.check()
    g = s.last["grad_norm"]
    tps = lap_steps * s.tokens_per_step / max(lap_time, 1e-9)
    row = {
        "kind": "train",
        "step": s.step,
        "train_loss": s.last["loss"].item(),
        "lr": s.last["lr"],
        "grad_norm": None if g is None else g.item(),
        "tokens_per_s": tps,
        "ms_per_iter": 1000 * lap_time / lap_steps,
        "mfu": mfu(s.flops_per_token, tps, s.peak),
        "elapsed_s": elapsed,
    }
    if s.main:
        s.run.append_metrics(row)
    s.wandb.log(row, s.step)
    s.progress.log(row, eta_s=(s.tcfg.max_iters - s.step) * lap_time / lap_steps)
    s.summary["tokens_per_s"] = tps


def _eval_row(s: Session, elapsed: float) -> None:
    losses = evaluate(s)
    if not math.isfinite(losses["val"]):
        raise Diverged(s.step, losses["val"])
    s.last_eval = losses
    row = {
        "kind": "eval", "step": s.step, "train_loss": losses["train"], "val_loss": losses["val"],
        "lr": s.last["lr"], "tokens_per_s": s.summary["tokens_per_s"], "elapsed_s": elapsed,
    }  # fmt: skip
    if s.main:
        s.run.append_metrics(row)
    s.wandb.log({"eval/train_loss": losses["train"], "eval/val_loss": losses["val"]}, s.step)
    s.progress.print(f"step {s.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    if losses["val"] < s.best_val:
        s.best_val = losses["val"]
        save(s, s.run.best)
    s.summary.update(best_val_loss=s.best_val, final_val_loss=losses["val"])


def _heads_row(s: Session) -> None:
    rows = head_metrics_snapshot(s.raw_model, s.meta, s.device)
    s.run.append_metrics({"kind": "heads", "step": s.step, "heads": rows})
    s.wandb.log(
        {
            f"heads/L{r['layer']}H{r['head']}/{k}": v
            for r in rows
            for k, v in r.items()
            if k not in ("layer", "head") and isinstance(v, int | float)
        },
        s.step,
    )


def _record(s: Session, **fields) -> None:
    s.summary.update(step=s.step, **fields)
    if s.main:
        try:
            s.run.write_summary(s.summary)
        except OSError:
            pass  # the disk may be full: the caller reports that


def _stopped(s: Session, why: str) -> dict:
    s.progress.close()
    s.progress.print(
        f"stopped at step {s.step} ({why}); checkpoint saved. Continue with: "
        f"python train.py train.resume=true hydra.run.dir={s.run.path}"
    )
    _record(s, status="interrupted", stop_reason=why)
    return s.summary


# ------------------------------------------------------------------------------------------------ finish
def finish(s: Session, wall_s: float) -> dict:
    """Summary, loss curves and (rank 0) a short sample; the run is marked finished last."""
    s.summary.update(step=s.step, wall_s=wall_s)
    if s.last_eval is not None:
        s.summary["final_val_loss"] = s.last_eval["val"]
    if not s.main:
        return {**s.summary, "status": "finished"}
    plot_losses(s.run.read_metrics(), s.run.loss_png, title=s.run.path.name)
    s.summary.update(status="finished")
    s.run.write_summary(s.summary)
    print(
        f"done: {s.step} steps in {wall_s:.1f}s | best val loss {s.best_val:.4f} | "
        f"{s.summary['tokens_per_s'] or 0:.0f} tokens/s | {s.run.path}",
        flush=True,
    )
    if s.tcfg.sample_tokens > 0:
        _print_sample(s)
    return s.summary


def _print_sample(s: Session) -> None:
    tok = get_tokenizer(s.meta)
    idx = torch.tensor([_start_token(tok)], device=s.device)
    try:
        out = s.raw_model.generate(idx, s.tcfg.sample_tokens, temperature=0.8, top_k=200)
    except KeyboardInterrupt:
        print("(sample skipped: interrupted; the run is finished and saved)", flush=True)
        return
    text = tok.decode(out[0, idx.shape[1] :].tolist())
    print("---- sample ----\n" + text + "\n----------------", flush=True)


def _start_token(tok) -> list[int]:
    """A neutral prompt for the end-of-run sample: end-of-text, else a newline, else token 0."""
    if tok.eot_id is not None:
        return [tok.eot_id]
    if tok.name == "char" and "\n" in tok.chars:
        return tok.encode("\n")
    return [0]
