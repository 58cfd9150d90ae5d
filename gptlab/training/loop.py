"""The training loop, in the pieces a reader looks for: set up, one optimizer step, evaluate, checkpoint, finish.

    train(cfg, run_dir, overrides)   plan (start / resume / skip), lock the run directory, set up, fit
    setup(...)  -> Session           typed config, device, data, model, optimizer, loader, eval batches
                                     (session.py); a Session holds the StepState that train_step advances
    train_step(s.state)              one optimizer step: grad_accum micro-batches, clip, step (step.py)
    evaluate(s) -> {train, val}      mean loss on fixed batches of each split
    save(s, path)                    a checkpoint, refused for non-finite weights
    fit(s)                           the loop: step, log, evaluate, checkpoint, stop on a signal
    finish(s)                        summary, loss curves, a sample

One optimizer step (gptlab/training/step.py): set the learning rate, run ``grad_accum`` micro-batches (forward under
autocast, backward through the gradient scaler; DDP syncs gradients on the last one only), unscale, clip,
step. The loss, the gradient norm and the NaN check stay on the device and are read only at log, evaluation
and checkpoint steps (the stopwatch waits for the GPU there, so tokens/s counts finished work), so the host
queues steps ahead of a GPU and never waits in between; with float16 the scaler hands its overflow flag to the
fused AdamW rather than reading it (tests/test_train.py spies on every read). Everything a bit-exact resume
needs is in the checkpoint.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gptlab.data import get_tokenizer
from gptlab.errors import UserError, disk_full_cause
from gptlab.interp.phases import training_phases
from gptlab.interp.tracking import training_row
from gptlab.rundir.checkpoint import NonFiniteWeights, save_checkpoint
from gptlab.rundir.layout import RunDir
from gptlab.runtime.device import autocast

from .ddp import shutdown
from .mfu import mfu
from .plot import plot_losses
from .resume import Plan, plan_run
from .rng import get_rng_state
from .run_output import log
from .session import Session, setup
from .signals import StopFlag
from .snapshots import describe, parse_snapshots
from .step import Diverged, train_step
from .throughput import Stopwatch

ROOT = Path(__file__).resolve().parents[2]  # the checkout: sample.py and heads.py lie here


# ------------------------------------------------------------------------------------------------ entry
def train(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Train, resume, or skip a finished run in ``run_dir``; returns the run's summary dict."""
    run, overrides = RunDir(run_dir), list(overrides or [])
    requested = OmegaConf.to_container(cfg, resolve=True)
    is_main = int(os.environ.get("RANK", "0")) == 0
    stop = StopFlag().install()
    plan = None
    try:
        with run.lock() if is_main else nullcontext():
            try:
                plan = plan_run(run, requested, overrides)
                if plan.action == "skip":
                    return _skip(run, plan, is_main)
                s = setup(plan, run, overrides, stop)
            except BaseException:  # refused, failed or stopped before the run began: leave nothing that
                if is_main:  # blocks the same command next time (a fresh start's own files, an empty folder)
                    if plan is not None and plan.action == "start" and plan.written:
                        run.remove_run_files()
                    run.discard_if_unused()
                raise
            try:
                return fit(s)
            finally:
                shutdown(s.dist)
    except KeyboardInterrupt:
        if run.ckpt.is_file():
            kept = (
                f"the last checkpoint in {run.path} is kept. Continue with: "
                f"python train.py train.resume=true {cli_arg('hydra.run.dir', run.path)}"
            )
        elif run.path.exists():
            kept = f"no checkpoint was saved yet in {run.path}"
        else:
            kept = "the run had not started; nothing was kept"
        print(f"interrupted; {kept}", file=sys.stderr)
        log.info(f"interrupted; {kept}")
        raise
    except Exception as e:
        full = disk_full_cause(e)
        if full is None:
            raise
        _mark(run, is_main, status="failed", error="disk full")
        if run.ckpt.is_file():
            then = f"continue with: python train.py train.resume=true {cli_arg('hydra.run.dir', run.path)}"
        elif run.existing_files():
            then = "start the run again with train.overwrite=true (no checkpoint was saved yet)"
        else:
            then = "run the same command again"
        raise UserError(
            f"no space left on the device (writing {full.filename or run.path}); free some space, then {then}"
        ) from None
    finally:
        stop.restore()


def _skip(run: RunDir, plan: Plan, is_main: bool) -> dict:
    step = plan.previous.get("step")
    msg = f"run in {run.path} already finished (step {step}); skipping (raise train.max_iters to train on)"
    print(msg)
    log.info(msg)
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


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(s: Session) -> dict[str, float]:
    """Mean loss on the fixed evaluation batches of each split (averaged over ranks)."""
    s.model.eval()
    out = {}
    with torch.no_grad():
        for split, batches in s.eval_batches.items():
            total = torch.zeros((), device=s.device)
            for x, y in batches:
                with autocast(s.device, s.dtype):
                    _, loss = s.raw_model(x, y)
                total += loss.float()
            out[split] = s.dist.mean(total.item() / len(batches), s.device)  # one read per split
    s.model.train()
    return out


# ------------------------------------------------------------------------------------------------ checkpoint
def save(s: Session, path: Path) -> None:
    """Write a checkpoint of the state after ``s.step`` steps (rank 0). Diverged weights are never saved."""
    st = s.state
    st.divergence.check()
    if not s.main:
        return
    try:
        save_checkpoint(
            path,
            model=s.raw_model.state_dict(),
            model_config=asdict(s.raw_model.config),
            optimizer=st.optimizer.state_dict(),
            scaler=st.scaler.state_dict() if st.scaler.is_enabled() else None,
            step=s.step,
            best_val_loss=None if math.isinf(s.best_val) else s.best_val,
            rng=get_rng_state(),
            loader=st.loader.state_dict(),
            config=s.config,
            tokenizer=s.meta,
        )
    except NonFiniteWeights:
        raise Diverged(s.step, float("nan")) from None
    if path == s.run.ckpt:
        s.saved_step = s.step


def save_snapshot(s: Session) -> None:
    """Keep the weights after ``s.step`` steps in ``snapshots/`` (rank 0; gptlab/training/snapshots.py)."""
    s.state.divergence.check()
    if not s.main:
        return
    try:
        save_checkpoint(
            s.run.snapshot(s.step),
            model=s.raw_model.state_dict(),
            model_config=asdict(s.raw_model.config),
            step=s.step,
            config=s.config,
            tokenizer=s.meta,
            snapshot=True,
        )
    except NonFiniteWeights:
        raise Diverged(s.step, float("nan")) from None


# ------------------------------------------------------------------------------------------------ the loop
def fit(s: Session) -> dict:
    """Train from ``s.step`` to ``train.max_iters`` (or until a signal), then finish."""
    tcfg, say = s.cfg.train, s.progress
    watch, wall_start, wall_before = Stopwatch(s.device), time.perf_counter(), s.summary["wall_s"]
    elapsed = lambda: wall_before + time.perf_counter() - wall_start  # noqa: E731
    speed = s.speed
    lap_steps, lap_time = 0, 0.0
    head_every = tcfg.head_metrics_interval if s.main else 0
    snaps = parse_snapshots(tcfg.snapshots)
    if s.main and snaps.kind != "none":
        storages = {
            v.untyped_storage().data_ptr(): v.untyped_storage().nbytes()
            for v in s.raw_model.state_dict().values()
        }
        say.print(describe(snaps, tcfg.max_iters, sum(storages.values())))  # tied weights counted once
        if snaps.due(s.step, tcfg.max_iters) and not s.run.snapshot(s.step).is_file():
            save_snapshot(s)  # step 0: the initial weights
    s.model.train()
    say.start(s.step)
    try:
        while s.step < tcfg.max_iters:
            train_step(s.state)
            say.step()
            step = s.step
            log_due = step % tcfg.log_interval == 0 or step == tcfg.max_iters
            if s.steps_this_call == 1:  # compile and warm-up: its own row, never in the run's tokens/s
                warmup = watch.lap()
                if log_due:
                    _train_row(s, 1, warmup, elapsed())
            else:
                lap_steps += 1
                if log_due:
                    lap_time += watch.lap()
                    speed.add(lap_steps, lap_time)
                    _train_row(s, lap_steps, lap_time, elapsed())
                    lap_steps, lap_time = 0, 0.0
            is_eval = step % tcfg.eval_interval == 0 or step == tcfg.max_iters
            heads_due = bool(head_every) and step % head_every == 0
            if is_eval or heads_due:
                lap_time += watch.lap()
                if is_eval:
                    _eval_row(s, elapsed())
                if heads_due:
                    _heads_row(s)
                speed.pause(watch.lap())  # evaluation time is not training time
            if snaps.due(step, tcfg.max_iters):  # before ckpt.pt: a checkpoint's step always has its snapshot
                lap_time += watch.lap()
                save_snapshot(s)
                speed.pause(watch.lap())  # nor is writing a snapshot
            ckpt_due = (step % tcfg.ckpt_interval == 0) if tcfg.ckpt_interval else is_eval
            stopping = s.stop.requested or (
                tcfg.stop_after_iters and s.steps_this_call >= tcfg.stop_after_iters
            )
            if ckpt_due or stopping or step == tcfg.max_iters:
                lap_time += watch.lap()
                save(s, s.run.ckpt)
                s.summary.update(step=step, wall_s=elapsed())
                if s.main:
                    s.run.write_summary(s.summary)
                speed.pause(watch.lap())  # nor is writing a checkpoint
            if stopping and step < tcfg.max_iters:
                return _stopped(s, s.stop.requested or f"train.stop_after_iters={tcfg.stop_after_iters}")
        s.state.divergence.check()
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
    """Read the step's numbers off the device (the one sync per log interval) and log them. The row's
    tokens/s is its own window's; the summary's is the run's average (training.throughput)."""
    s.state.divergence.check()
    g = s.state.last["grad_norm"]
    tps = lap_steps * s.tokens_per_step / max(lap_time, 1e-9)
    row = {
        "kind": "train",
        "step": s.step,
        "train_loss": s.state.last["loss"].item(),
        "lr": s.state.last["lr"],
        "grad_norm": None if g is None else g.item(),
        "tokens_per_s": tps,
        "ms_per_iter": 1000 * lap_time / lap_steps,
        "mfu": mfu(s.flops_per_token, tps, s.peak),
        "elapsed_s": elapsed,
    }
    if s.main:
        s.run.append_metrics(row)
    s.wandb.log(row, s.step)
    s.progress.log(row, eta_s=s.speed.eta(s.cfg.train.max_iters - s.step))
    s.summary.update(s.speed.state())


def _eval_row(s: Session, elapsed: float) -> None:
    losses = evaluate(s)
    if not math.isfinite(losses["val"]):
        raise Diverged(s.step, losses["val"])
    s.last_eval = losses
    _note_target(s, losses["val"], elapsed)
    row = {
        "kind": "eval", "step": s.step, "train_loss": losses["train"], "val_loss": losses["val"],
        "lr": s.state.last["lr"], "tokens_per_s": s.summary["tokens_per_s"], "elapsed_s": elapsed,
    }  # fmt: skip
    if s.main:
        s.run.append_metrics(row)
    s.wandb.log({"eval/train_loss": losses["train"], "eval/val_loss": losses["val"]}, s.step)
    s.progress.print(f"step {s.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    if losses["val"] < s.best_val:
        s.best_val = losses["val"]
        save(s, s.run.best)
    s.summary.update(best_val_loss=s.best_val, final_val_loss=losses["val"])


def _note_target(s: Session, val_loss: float, elapsed: float) -> None:
    """train.target_loss: summary.json's time_to_target holds the step, tokens and wall seconds of the first
    evaluation whose val loss was at or below it (null until then; kept across a resume)."""
    target = s.cfg.train.target_loss
    if target is None:
        return
    rec = s.summary.get("time_to_target")
    if not isinstance(rec, dict) or rec.get("target_loss") != target:
        rec = s.summary["time_to_target"] = {
            "target_loss": target,
            "step": None,
            "tokens": None,
            "wall_s": None,
        }
    if rec["step"] is None and val_loss <= target:
        rec.update(step=s.step, tokens=s.step * s.tokens_per_step, wall_s=elapsed)


def _heads_row(s: Session) -> None:
    row = training_row(s.raw_model, s.meta, s.device, s.eval_batches.get("val"))
    rows = row["heads"]
    s.run.append_metrics({"kind": "heads", "step": s.step, **row})
    s.wandb.log(
        {
            f"heads/L{r['layer']}H{r['head']}/{k}": v
            for r in rows
            for k, v in r.items()
            if k not in ("layer", "head") and isinstance(v, int | float)
        }
        | ({"heads/icl_score": row["icl_score"]} if "icl_score" in row else {}),
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
        f"python train.py train.resume=true {cli_arg('hydra.run.dir', s.run.path)}"
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
    rows = s.run.read_metrics()
    plot_losses(rows, s.run.loss_png, title=s.run.path.name)
    phases = training_phases(rows) if s.cfg.train.head_metrics_interval else None
    if phases is not None:
        s.summary["phases"] = phases
    s.summary.update(status="finished")
    s.run.write_summary(s.summary)
    tps = s.summary.get("tokens_per_s")
    speed = f"{tps:,.0f} tokens/s" if tps else "tokens/s n/a"
    s.progress.result(
        f"done: {s.step} steps in {wall_s:.1f}s | best val loss {s.best_val:.4f} | {speed} (run average; "
        f"first step, evaluation and checkpoints not counted) | {s.run.path}"
    )
    if phases is not None:
        print(f"phases: {phases['sentence']}", flush=True)
    if s.cfg.train.sample_tokens > 0:
        _print_sample(s)
    for line in next_steps(s.run.path):
        s.progress.result(line)
    return s.summary


def next_steps(run_dir: Path) -> list[str]:
    """What to do with a finished run: where its curves are, and the commands to look at it further."""
    shown = _shown_path(run_dir)
    run = cli_arg("run", shown)
    sample, heads = (shlex.quote(_shown_path(ROOT / name)) for name in ("sample.py", "heads.py"))
    return [
        f"loss curves: {Path(shown) / RunDir.LOSS_PNG}",
        f"next: python {sample} {run}   # text from its best checkpoint",
        f"      python {heads} {run}    # what its attention heads do (writes heads/heads.html in the run)",
    ]


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (shorter to read and type)."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cli_arg(key: str, value: str | Path) -> str:
    """``key=value`` as one shell word that Hydra reads back as ``value``: a path with spaces, commas or
    brackets is quoted for Hydra (double quotes) inside the shell's single quotes."""
    text = str(value)
    if re.fullmatch(r"[\w./+@%-]+", text):
        return f"{key}={text}"
    if any(c in text for c in "\"'\\"):  # rare: left to the shell's quoting alone
        return shlex.quote(f"{key}={text}")
    return shlex.quote(f'{key}="{text}"')


def _print_sample(s: Session) -> None:
    tok = get_tokenizer(s.meta)
    idx = torch.tensor([_start_token(tok)], device=s.device)
    try:
        out = s.raw_model.generate(idx, s.cfg.train.sample_tokens, temperature=0.8, top_k=200)
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
