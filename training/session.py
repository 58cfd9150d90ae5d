"""A training run's state (``Session``) and ``setup``: everything before the first optimizer step.

setup(plan, run, overrides, stop) -> Session
    validate every config section (before anything is written), pick device and precision, join the
    process group, write the run directory (rank 0), prepare the data, build the model, optimizer,
    gradient scaler and loader, restore a checkpoint, build the fixed evaluation batches, start the summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data import BatchLoader, DataConfig, load_meta, prepare
from gptlab_errors import UserError
from model import GPT, GPTConfig
from model.flex import check_flex, flex_is_best
from model.positions import SCHEMES
from rundir.checkpoint import first_line, model_state
from rundir.files import remove_stale_temps
from rundir.layout import RunDir
from rundir.load import shape_mismatch
from runtime.device import (
    enable_determinism,
    enable_tf32,
    grad_scaler,
    pick_device,
    pick_dtype,
    set_threads,
    warn_slow_dtype,
)

from .config import OptimConfig, TrainConfig, from_mapping
from .ddp import Dist, init_distributed
from .logging import Progress, Wandb
from .mfu import peak_flops
from .optim import build_optimizer
from .pretrained import carried_tokenizer, start_from_pretrained
from .resume import Plan
from .rng import seed_everything, set_rng_state
from .signals import StopFlag
from .throughput import Throughput


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
    speed: Throughput | None = None  # the run's average tokens/s and the ETA
    last: dict = field(default_factory=dict)  # the last step's loss and grad norm (device tensors)
    last_eval: dict | None = None

    @property
    def main(self) -> bool:
        return self.dist.is_main


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
    plan.written = True  # from here a failed fresh start removes what it wrote (training.loop.train)
    if plan.clear:
        gone = run.remove_run_files()
        say.print(f"starting over in {run.path}: removed the previous run's {', '.join(gone)}")
    if plan.ckpt is not None:
        run.truncate_metrics(int(plan.ckpt["step"]))
        run.truncate_snapshots(int(plan.ckpt["step"]))  # retaken as the run reaches them again
    run.write_config(plan.config)


def setup(plan: Plan, run: RunDir, overrides: list[str], stop: StopFlag) -> Session:
    """Everything before the first step. Rank 0 alone writes to the run directory."""
    # init_from: the model section becomes the pretrained one
    pretrained = start_from_pretrained(plan, overrides)
    cfg = OmegaConf.create(plan.config)
    tcfg, ocfg, dcfg, seed = _validated(plan.config)  # every section, before anything is written
    dcfg = carried_tokenizer(plan, run.path, dcfg)  # a resume whose data.tokenizer=<path> is gone
    device = pick_device(tcfg.device)
    model_cfg = plan.config["model"]
    if model_cfg.get("attn_impl") == "flex":  # before anything is written: can this torch train flex here?
        scheme = SCHEMES[model_cfg["position"]]
        check_flex(device, True, scheme.learned_bias, model_cfg["position"], dropout=False)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    say = Progress(tcfg.max_iters, enabled=dist.is_main)
    if dist.is_main:
        _prepare_run_dir(run, plan, say)
        for change in plan.changes:
            say.print(f"resume: {change}")
        if dcfg.tokenizer != plan.config["data"]["tokenizer"]:
            say.print(
                f"resume: data.tokenizer={plan.config['data']['tokenizer']} is gone; using the run's copy"
            )
    seed_everything(seed)
    enable_tf32()
    if tcfg.deterministic:
        enable_determinism()

    data_dir = prepare(dcfg) if dist.is_main else None
    dist.barrier()
    data_dir = data_dir or prepare(dcfg)
    meta = load_meta(data_dir)

    mcfg = _model_config(plan.config["model"], meta)
    dtype = pick_dtype(tcfg.dtype, device, cpu_bf16_pays=mcfg.attn_impl == "explicit")
    warn_slow_dtype(dtype, device)
    raw_model = GPT(mcfg)
    if pretrained is not None:
        raw_model.load_state_dict(pretrained.state)
        say.print(
            f"init_from={pretrained.source}: {pretrained.family} weights from {pretrained.weights_file}"
        )
    set_threads(tcfg.threads, raw_model.flops_per_token(mcfg.block_size) * tcfg.batch_size, device)
    raw_model = raw_model.to(device)
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
    tokens_per_step = B * T * tcfg.grad_accum * dist.world_size
    s = Session(
        cfg=cfg, tcfg=tcfg, ocfg=ocfg, run=run, dist=dist, device=device, dtype=dtype, meta=meta, mcfg=mcfg,
        raw_model=raw_model, model=model, optimizer=optimizer, scaler=scaler, loader=loader,
        eval_batches=eval_batches, summary=summary, progress=say,
        wandb=Wandb(plan.config.get("wandb", {}), run.path, plan.config, enabled=dist.is_main),
        stop=stop, step=step, best_val=best_val, saved_step=step if ckpt is not None else None,
        tokens_per_step=tokens_per_step,
        flops_per_token=raw_model.flops_per_token(T), peak=peak_flops(device, dtype),
        divergence=Divergence(device),
        speed=Throughput(tokens_per_step, summary["timed_steps"], summary["timed_s"]),
    )  # fmt: skip
    if s.main:
        run.write_summary(summary)
        say.print(
            f"run dir {run.path} | {summary['params'] / 1e6:.2f}M params | {device} {summary['dtype']} | "
            f"{s.tokens_per_step} tokens/step | data {data_dir}"
        )
        say.print(f"model: {describe_model(mcfg, raw_model.pos, device)}")
    return s


def describe_model(mcfg: GPTConfig, pos, device: torch.device) -> str:
    """The architecture in one line: layers, width, heads and KV heads, position scheme, window, and the
    attention path training takes (``attn_impl=auto`` resolved as model/attention.py resolves it)."""
    kv = mcfg.kv_heads
    variant = "MHA" if kv == mcfg.n_head else ("MQA" if kv == 1 else "GQA")
    window = f"window {mcfg.window}" if mcfg.window is not None else "full causal attention"
    return (
        f"{mcfg.n_layer} layers, d_model {mcfg.n_embd}, {mcfg.n_head} heads / {kv} KV heads ({variant}), "
        f"{mcfg.position} positions, {window}, block {mcfg.block_size}, attn {_attention_path(mcfg, pos, device)}"
    )


def _attention_path(mcfg: GPTConfig, pos, device: torch.device) -> str:
    if mcfg.attn_impl == "explicit" or pos.needs_probs:
        return "explicit" if mcfg.attn_impl == "explicit" else f"explicit ({mcfg.position} value term)"
    if mcfg.attn_impl != "auto":
        return mcfg.attn_impl
    windowed = mcfg.window is not None and mcfg.window < mcfg.block_size
    flex = mcfg.dropout == 0 and flex_is_best(
        device, mcfg.block_size, pos.has_score_bias, windowed, True, pos.learned_bias
    )
    return f"{'flex' if flex else 'sdpa'} (auto)"


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
        "tokens_per_s": old.get("tokens_per_s"),  # the run's average (training/throughput.py)
        "timed_steps": old.get("timed_steps", 0),
        "timed_s": old.get("timed_s", 0.0),
        "wall_s": old.get("wall_s", 0.0),
        "kv_cache_bytes_per_token": raw_model.kv_cache_bytes_per_token(),
        "overrides": old.get("overrides", list(overrides)),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "world_size": dist.world_size,
    }
    if plan.config.get("init_from"):
        summary["init_from"] = plan.config["init_from"]
    summary.pop("stop_reason", None)
    summary.pop("error", None)
    if resumed:
        summary["resumes"] = [
            *old.get("resumes", []),
            {"step": step, "overrides": overrides, "changes": plan.changes},
        ]
    return summary
