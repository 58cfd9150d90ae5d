"""The training loop: one function, `train(cfg, run_dir)`, that train.py calls with Hydra's config.

Order of one optimizer step: set the learning rate, run `grad_accum` micro-batches (forward under
autocast, backward; DDP syncs gradients on the last one only), clip, step, log. After steps that are
multiples of `train.eval_interval` (and the last) it evaluates on fixed batches, keeps `best.pt`, and
writes `ckpt.pt`. Everything a bit-exact resume needs is in the checkpoint.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from data import BatchLoader, DataConfig, get_tokenizer, load_meta, prepare
from gptlab_errors import UserError
from model import GPT, GPTConfig

from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .config import OptimConfig, TrainConfig, from_mapping
from .ddp import Dist, init_distributed, shutdown
from .device import autocast, enable_tf32, pick_device, pick_dtype
from .logging import MetricsFile, Progress, Stopwatch, Wandb
from .mfu import mfu, peak_flops
from .optim import build_optimizer, lr_at
from .plot import plot_losses
from .rng import get_rng_state, seed_everything, set_rng_state


def read_summary(run_dir: Path) -> dict:
    p = Path(run_dir) / "summary.json"
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except json.JSONDecodeError:
        return {}


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write(
        Path(run_dir) / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2))
    )


class _StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop after the current step (it then saves a checkpoint).
    A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = None
        self._old = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some launchers): signals stay as they are
                pass

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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


def _start_token(tok) -> list[int]:
    """A neutral prompt for the end-of-run sample: end-of-text, else a newline, else token 0."""
    if getattr(tok, "eot_id", None) is not None:
        return [tok.eot_id]
    try:
        return tok.encode("\n") or [0]
    except Exception:
        return [0]


def train(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Train (or resume, or skip a finished run) in `run_dir`; returns the run's summary dict."""
    run_dir = Path(run_dir)
    tcfg: TrainConfig = from_mapping(TrainConfig, OmegaConf.to_container(cfg.train, resolve=True), "train")
    ocfg: OptimConfig = from_mapping(OptimConfig, OmegaConf.to_container(cfg.optim, resolve=True), "optim")
    device = pick_device(tcfg.device)
    dist_ = init_distributed(device.type)
    if dist_.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_.local_rank)
    try:
        return _train(cfg, tcfg, ocfg, run_dir, overrides or [], device, dist_)
    finally:
        shutdown(dist_)


def _train(
    cfg,
    tcfg: TrainConfig,
    ocfg: OptimConfig,
    run_dir: Path,
    overrides: list[str],
    device: torch.device,
    dist_: Dist,
) -> dict:
    main = dist_.is_main
    say = Progress(tcfg.max_iters, enabled=main)

    # ---- resume, skip, or start -------------------------------------------------------------------
    previous = read_summary(run_dir)
    if tcfg.resume == "auto" and previous.get("status") == "finished":
        say.print(f"run in {run_dir} already finished (step {previous.get('step')}); skipping")
        return previous
    ckpt = None
    if tcfg.resume in (True, "auto"):
        if (run_dir / "ckpt.pt").exists():
            ckpt = load_checkpoint(run_dir / "ckpt.pt")
        elif tcfg.resume is True:
            raise UserError(
                f"train.resume=true but {run_dir} has no ckpt.pt; point hydra.run.dir=<run dir> at the "
                "run to continue, or drop train.resume"
            )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
        metrics_path = run_dir / "metrics.jsonl"
        if ckpt is None and metrics_path.exists():
            metrics_path.unlink()  # a fresh start in a reused directory
        elif ckpt is not None and metrics_path.exists():
            _truncate_metrics(metrics_path, int(ckpt["step"]))

    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    seed_everything(int(cfg.seed))
    dtype = pick_dtype(tcfg.dtype, device)
    enable_tf32()

    # ---- data ---------------------------------------------------------------------------------------
    dcfg = from_mapping(DataConfig, OmegaConf.to_container(cfg.data, resolve=True), "data")
    if main:
        data_dir = prepare(dcfg)
    dist_.barrier()
    if not main:
        data_dir = prepare(dcfg)
    meta = load_meta(data_dir)

    # ---- model and optimizer ----------------------------------------------------------------------------
    mcfg = _model_config(OmegaConf.to_container(cfg.model, resolve=True), meta)
    model = GPT(mcfg).to(device)
    optimizer = build_optimizer(model, ocfg, device.type)
    B, T = tcfg.batch_size, mcfg.block_size
    loader = BatchLoader(
        data_dir / "train.bin",
        block_size=T,
        batch_size=B,
        seed=int(cfg.seed),
        rank=dist_.rank,
        world_size=dist_.world_size,
        device=device,
    )
    step, best_val = 0, math.inf
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])
        step, best_val = int(ckpt["step"]), float(ckpt.get("best_val_loss") or math.inf)
        set_rng_state(ckpt["rng"])
        say.print(f"resumed {run_dir} at step {step}")
    raw_model = model
    if tcfg.compile:
        model = torch.compile(model)
    if dist_.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    n_params = raw_model.num_params()
    kv_bytes = raw_model.kv_cache_bytes_per_token()
    flops_tok = raw_model.flops_per_token(T)
    peak = peak_flops(device, dtype)
    tokens_per_step = B * T * tcfg.grad_accum * dist_.world_size
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    summary = {
        "status": "running",
        "step": step,
        "max_iters": tcfg.max_iters,
        "params": n_params,
        "best_val_loss": None if math.isinf(best_val) else best_val,
        "final_val_loss": None,
        "tokens_per_s": None,
        "wall_s": previous.get("wall_s", 0.0) if ckpt is not None else 0.0,
        "kv_cache_bytes_per_token": kv_bytes,
        "overrides": list(overrides),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "world_size": dist_.world_size,
    }
    metrics = MetricsFile(run_dir / "metrics.jsonl", enabled=main)
    wb = Wandb(config_dict.get("wandb", {}), run_dir, config_dict, enabled=main)
    if main:
        write_summary(run_dir, summary)
        say.print(
            f"run dir {run_dir} | {n_params / 1e6:.2f}M params | {device} {summary['dtype']} | "
            f"{tokens_per_step} tokens/step | data {data_dir}"
        )

    # The same `eval_iters` batches of each split at every evaluation (and after a resume), built once.
    eval_batches = {
        split: BatchLoader(
            data_dir / f"{split}.bin",
            block_size=T,
            batch_size=B,
            seed=int(cfg.seed) + 1,
            rank=dist_.rank,
            world_size=dist_.world_size,
            device=device,
        ).fixed_batches(tcfg.eval_iters)
        for split in ("train", "val")
    }

    def evaluate() -> dict[str, float]:
        """Mean loss on the fixed evaluation batches of each split (averaged over ranks)."""
        model.eval()
        out = {}
        with torch.no_grad():
            for split, batches in eval_batches.items():
                total = 0.0
                for x, y in batches:
                    with autocast(device, dtype):
                        _, loss = raw_model(x, y)
                    total += loss.item()
                out[split] = dist_.mean(total / len(batches), device)
        model.train()
        return out

    def checkpoint(path: Path, next_step: int) -> None:
        if not main:
            return
        save_checkpoint(
            path,
            model=raw_model.state_dict(),
            model_config=asdict(mcfg),
            optimizer=optimizer.state_dict(),
            step=next_step,
            best_val_loss=None if math.isinf(best_val) else best_val,
            rng=get_rng_state(),
            loader=loader.state_dict(),
            config=config_dict,
            tokenizer=meta,
        )

    stop = _StopFlag()
    stop.install()
    head_metrics = _head_metrics_fn(tcfg, main)
    say.start(step)
    watch, wall_start = Stopwatch(), time.perf_counter()
    wall_before = summary["wall_s"]
    steps_this_call, lap_steps, lap_time, last_eval = 0, 0, 0.0, None
    model.train()
    try:
        while step < tcfg.max_iters:
            lr = lr_at(step, ocfg, tcfg.max_iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(tcfg.grad_accum):
                x, y = loader.next()
                if dist_.enabled:
                    model.require_backward_grad_sync = micro == tcfg.grad_accum - 1
                with autocast(device, dtype):
                    _, loss = model(x, y)
                (loss / tcfg.grad_accum).backward()
                loss_sum += loss.detach()
            grad_norm = None
            if tcfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tcfg.grad_clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_loss = loss_sum.item() / tcfg.grad_accum
            if not math.isfinite(train_loss):
                raise _Diverged(step, train_loss)
            step += 1
            steps_this_call += 1
            lap_steps += 1
            say.step()

            if step % tcfg.log_interval == 0 or step == tcfg.max_iters:
                lap_time += watch.lap()
                tps = lap_steps * tokens_per_step / max(lap_time, 1e-9)
                row = {
                    "kind": "train",
                    "step": step,
                    "train_loss": train_loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens_per_s": tps,
                    "ms_per_iter": 1000 * lap_time / lap_steps,
                    "mfu": mfu(flops_tok, tps, peak),
                    "elapsed_s": wall_before + time.perf_counter() - wall_start,
                }
                eta = (tcfg.max_iters - step) * lap_time / lap_steps
                metrics.write(row)
                wb.log(row, step)
                say.log(row, eta_s=eta)
                summary["tokens_per_s"] = tps
                lap_steps, lap_time = 0, 0.0

            is_eval = step % tcfg.eval_interval == 0 or step == tcfg.max_iters
            if is_eval:
                lap_time += watch.lap()
                losses = evaluate()
                watch.lap()  # evaluation time is not training time
                if not math.isfinite(losses["val"]):
                    raise _Diverged(step, losses["val"])
                last_eval = losses
                row = {
                    "kind": "eval",
                    "step": step,
                    "train_loss": losses["train"],
                    "val_loss": losses["val"],
                    "lr": lr,
                    "tokens_per_s": summary["tokens_per_s"],
                    "elapsed_s": wall_before + time.perf_counter() - wall_start,
                }
                metrics.write(row)
                wb.log({"eval/train_loss": losses["train"], "eval/val_loss": losses["val"]}, step)
                say.print(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if losses["val"] < best_val:
                    best_val = losses["val"]
                    checkpoint(run_dir / "best.pt", step)
                summary.update(best_val_loss=best_val, final_val_loss=losses["val"])
            if head_metrics is not None and step % tcfg.head_metrics_interval == 0:
                lap_time += watch.lap()
                rows = head_metrics(raw_model, meta, device)
                watch.lap()
                metrics.write({"kind": "heads", "step": step, "heads": rows})
                wb.log(
                    {
                        f"heads/L{r['layer']}H{r['head']}/{k}": v
                        for r in rows
                        for k, v in r.items()
                        if k not in ("layer", "head") and isinstance(v, (int, float))
                    },
                    step,
                )
            ckpt_due = (step % tcfg.ckpt_interval == 0) if tcfg.ckpt_interval else is_eval
            stopping = stop.requested or (tcfg.stop_after_iters and steps_this_call >= tcfg.stop_after_iters)
            if ckpt_due or stopping or step == tcfg.max_iters:
                checkpoint(run_dir / "ckpt.pt", step)
                summary.update(step=step, wall_s=wall_before + time.perf_counter() - wall_start)
                if main:
                    write_summary(run_dir, summary)
            if stopping and step < tcfg.max_iters:
                why = stop.requested or f"train.stop_after_iters={tcfg.stop_after_iters}"
                say.close()
                say.print(
                    f"stopped at step {step} ({why}); checkpoint saved. Continue with: "
                    f"python train.py train.resume=true hydra.run.dir={run_dir}"
                )
                summary.update(status="interrupted", stop_reason=why)
                if main:
                    write_summary(run_dir, summary)
                wb.finish()
                return summary
    except _Diverged as e:
        summary.update(status="failed", step=step)
        if main:
            write_summary(run_dir, summary)
        wb.finish()
        raise UserError(
            f"{e}; stopped. The last good checkpoint is kept in {run_dir}; lower optim.lr or keep "
            "train.grad_clip on"
        ) from None
    except BaseException as e:
        summary.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", step=step)
        if main:
            write_summary(run_dir, summary)
        raise
    finally:
        stop.restore()
        say.close()

    summary.update(status="finished", step=step, wall_s=wall_before + time.perf_counter() - wall_start)
    if last_eval is not None:
        summary["final_val_loss"] = last_eval["val"]
    if main:
        write_summary(run_dir, summary)
        plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", title=run_dir.name)
        print(
            f"done: {step} steps in {summary['wall_s']:.1f}s | best val loss {best_val:.4f} | "
            f"{summary['tokens_per_s'] or 0:.0f} tokens/s | {run_dir}",
            flush=True,
        )
        if tcfg.sample_tokens > 0:
            tok = get_tokenizer(meta)
            idx = torch.tensor([_start_token(tok)], device=device)
            out = raw_model.generate(idx, tcfg.sample_tokens, temperature=0.8, top_k=200)
            print(
                "---- sample ----\n" + tok.decode(out[0, idx.shape[1] :].tolist()) + "\n----------------",
                flush=True,
            )
    wb.finish()
    return summary


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (a hard kill can leave some), so a resumed
    run's metrics.jsonl has each step once."""
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
    if len(keep) != len(rows):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))


class _Diverged(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step}")


def _head_metrics_fn(tcfg: TrainConfig, main: bool):
    """The per-head metric snapshot used every train.head_metrics_interval steps (rank 0 only)."""
    if not tcfg.head_metrics_interval or not main:
        return None
    from interp.tracking import head_metrics_snapshot

    return head_metrics_snapshot
