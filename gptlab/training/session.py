"""A training run's state (``Session``) and ``setup``: everything before the first optimizer step.

setup(plan, run, overrides, stop) -> Session, in named pieces:
    run_config       the run's typed config (training.config.RunConfig), built once; init_from applied
    start_process    device (and whether it can train flex attention), process group, seeds, kernels
    _prepare_run_dir rank 0 writes the run directory: old files cleared or trimmed, config.yaml
    prepare_data     the prepared token files (rank 0 prepares, the others wait) and their meta
    build_step_state a new model (init_from's weights), optimizer, scaler, loader: a StepState
    _restore         a resume's checkpoint into it;  _wrap: torch.compile and DDP
    _eval_batches    the fixed evaluation batches;  _start_summary: summary.json's first version

A Session holds a StepState (training.step: what one optimizer step needs) and the run's I/O around it:
config, run directory, summary, evaluation batches, progress, wandb, stop flag, speed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.data import BatchLoader, DataConfig, load_meta, prepare
from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig
from gptlab.model.flex import check_flex, flex_is_best
from gptlab.model.positions import SCHEMES
from gptlab.rundir.checkpoint import first_line, model_state
from gptlab.rundir.files import remove_stale_temps
from gptlab.rundir.layout import RunDir
from gptlab.rundir.load import shape_mismatch
from gptlab.runtime.device import (
    enable_determinism,
    enable_tf32,
    grad_scaler,
    pick_device,
    pick_dtype,
    set_threads,
    warn_slow_dtype,
)

from .config import RunConfig
from .ddp import Dist, init_distributed
from .mfu import peak_flops
from .optim import MuonAdamW, build_optimizer
from .pretrained import carried_tokenizer, start_from_pretrained
from .resume import Plan
from .rng import seed_everything, set_rng_state
from .run_output import Progress, Wandb
from .signals import StopFlag
from .step import StepState
from .throughput import Throughput


@dataclass(kw_only=True)
class Session:
    """One training run: the step state and what the run does around its steps."""

    cfg: RunConfig
    config: dict  # the same config as a plain dict: config.yaml, every checkpoint, wandb
    state: StepState
    run: RunDir
    dist: Dist
    meta: dict  # the prepared data's meta.json (the tokenizer), stored in every checkpoint
    eval_batches: dict
    summary: dict
    progress: Progress
    wandb: Wandb
    stop: StopFlag
    speed: Throughput  # the run's average tokens/s and the ETA
    best_val: float = math.inf
    saved_step: int | None = None  # step of the last ckpt.pt written (or resumed from)
    start_step: int = 0  # the step this call started at (a resume: the checkpoint's)
    tokens_per_step: int = 0
    flops_per_token: int = 0
    peak: float | None = None
    last_eval: dict | None = None

    @property
    def main(self) -> bool:
        return self.dist.is_main

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def steps_this_call(self) -> int:
        return self.state.step - self.start_step

    # what the run reads off its step state: evaluation, checkpoints, head metrics and the sample use them
    @property
    def model(self) -> torch.nn.Module:
        return self.state.model

    @property
    def raw_model(self) -> GPT:
        return self.state.raw_model

    @property
    def device(self) -> torch.device:
        return self.state.device

    @property
    def dtype(self) -> torch.dtype:
        return self.state.dtype


# ------------------------------------------------------------------------------------------------ set up
def setup(plan: Plan, run: RunDir, overrides: list[str], stop: StopFlag) -> Session:
    """Everything before the first step. Rank 0 alone writes to the run directory."""
    cfg, pretrained = run_config(plan, overrides)  # every section checked, before anything is written
    dcfg = carried_tokenizer(plan, run.path, cfg.data)  # a resume whose data.tokenizer=<path> is gone
    device, dist = start_process(cfg)
    say = Progress(cfg.train.max_iters, enabled=dist.is_main)
    if dist.is_main:
        _prepare_run_dir(run, plan, say)
        for change in plan.changes:
            say.print(f"resume: {change}")
        if dcfg.tokenizer != cfg.data.tokenizer:
            say.print(f"resume: data.tokenizer={cfg.data.tokenizer} is gone; using the run's copy")
    data_dir, meta = prepare_data(dcfg, dist)
    state = build_step_state(cfg, with_data_vocab(cfg.model, meta), data_dir, device, dist, pretrained, say)
    ckpt, best_val = plan.ckpt, math.inf
    if ckpt is not None:
        _restore(ckpt, state, run)
        best_val = float(ckpt.get("best_val_loss") or math.inf)
        say.print(f"resumed {run.path} at step {state.step}")
    state.model = _wrap(state.raw_model, cfg.train.compile, dist, device)
    T = state.raw_model.config.block_size
    eval_batches = _eval_batches(data_dir, cfg, T, dist, device)
    summary = _start_summary(plan, cfg, state, overrides, dist, best_val)
    tokens_per_step = cfg.train.batch_size * T * cfg.train.grad_accum * dist.world_size
    s = Session(
        cfg=cfg, config=plan.config, state=state, run=run, dist=dist, meta=meta,
        eval_batches=eval_batches, summary=summary, progress=say,
        wandb=Wandb(cfg.wandb, run.path, plan.config, enabled=dist.is_main), stop=stop,
        speed=Throughput(tokens_per_step, summary["timed_steps"], summary["timed_s"]),
        best_val=best_val, saved_step=state.step if ckpt is not None else None, start_step=state.step,
        tokens_per_step=tokens_per_step, flops_per_token=state.raw_model.flops_per_token(T),
        peak=peak_flops(device, state.dtype),
    )  # fmt: skip
    if s.main:
        run.write_summary(summary)
        say.print(
            f"run dir {run.path} | {summary['params'] / 1e6:.2f}M params | {device} {summary['dtype']} | "
            f"{s.tokens_per_step} tokens/step | data {data_dir}"
        )
        say.print(f"model: {describe_model(state.raw_model.config, state.raw_model.pos, device)}")
        opt = state.optimizer
        if isinstance(opt, MuonAdamW) and opt.muon.param_groups[0].get("ns_dtype") == "float32":
            say.print(
                f"optim: Muon's Newton-Schulz in float32 (optim.muon_ns_dtype={cfg.optim.muon_ns_dtype})"
            )
    return s


def run_config(plan: Plan, overrides: list[str]):
    """The run's typed config, built once, and the pretrained model for init_from (else None).

    A resume's config is final in ``plan_run`` (which needs its ``train.max_iters``) and built there; a
    start's is built here, after ``init_from`` made the model section the pretrained model's."""
    pretrained = start_from_pretrained(plan, overrides)
    if plan.cfg is None:
        plan.cfg = RunConfig.from_mapping(plan.config)
    return plan.cfg, pretrained


def start_process(cfg: RunConfig) -> tuple[torch.device, Dist]:
    """Pick the device (refusing flex attention where this torch cannot train it), join the process group
    under torchrun, then set the seeds and the kernel choices. Writes nothing."""
    device = pick_device(cfg.train.device)
    if cfg.model.attn_impl == "flex":
        scheme = SCHEMES[cfg.model.position]
        check_flex(device, True, scheme.learned_bias, cfg.model.position, dropout=False)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    seed_everything(cfg.seed)
    enable_tf32()
    if cfg.train.deterministic:
        enable_determinism()
    return device, dist


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


def prepare_data(dcfg: DataConfig, dist: Dist) -> tuple[Path, dict]:
    """The prepared folder and its meta: rank 0 prepares, the other ranks wait for it, then find it ready."""
    data_dir = prepare(dcfg) if dist.is_main else None
    dist.barrier()
    data_dir = data_dir or prepare(dcfg)
    return data_dir, load_meta(data_dir)


def with_data_vocab(model: GPTConfig, meta: dict) -> GPTConfig:
    """``model`` with the data's vocabulary where ``model.vocab_size`` is None; a smaller one is one line."""
    vocab = int(meta["vocab_size"])
    if model.vocab_size is None:
        return dataclasses.replace(model, vocab_size=vocab)
    if model.vocab_size < vocab:
        raise UserError(
            f"model.vocab_size={model.vocab_size} is smaller than the data's vocabulary ({vocab}); "
            "set model.vocab_size=null"
        )
    return model


def build_step_state(
    cfg: RunConfig, model_cfg: GPTConfig, data_dir: Path, device, dist: Dist, pretrained, say: Progress
) -> StepState:
    """A new model (with init_from's weights), its optimizer and gradient scaler, and this rank's loader; the
    CPU threads for its step (train.threads, or the rule of runtime.device.set_threads)."""
    dtype = pick_dtype(cfg.train.dtype, device, cpu_bf16_pays=model_cfg.attn_impl == "explicit")
    warn_slow_dtype(dtype, device)
    raw_model = GPT(model_cfg)
    if pretrained is not None:
        raw_model.load_state_dict(pretrained.state)
        say.print(
            f"init_from={pretrained.source}: {pretrained.family} weights from {pretrained.weights_file}"
        )
    # the work of one micro-batch: batch_size sequences of block_size tokens, forward and backward
    tokens = cfg.train.batch_size * model_cfg.block_size
    set_threads(cfg.train.threads, raw_model.flops_per_token(model_cfg.block_size) * tokens, device)
    raw_model = raw_model.to(device)
    loader = BatchLoader(
        data_dir / "train.bin", block_size=model_cfg.block_size, batch_size=cfg.train.batch_size,
        seed=cfg.seed, rank=dist.rank, world_size=dist.world_size, device=device,
    )  # fmt: skip
    return StepState(
        raw_model=raw_model, optimizer=build_optimizer(raw_model, cfg.optim, device.type),
        scaler=grad_scaler(device, dtype), loader=loader, train=cfg.train, optim=cfg.optim,
        device=device, dtype=dtype,
    )  # fmt: skip


def _wrap(raw_model: GPT, compile: bool, dist: Dist, device: torch.device) -> torch.nn.Module:
    """What the forward pass calls: the model, compiled (train.compile) and in DDP (under torchrun)."""
    model = torch.compile(raw_model) if compile else raw_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _eval_batches(data_dir: Path, cfg: RunConfig, T: int, dist: Dist, device) -> dict:
    """The same eval_iters batches of each split at every evaluation (and after a resume), built once."""
    return {
        split: BatchLoader(
            data_dir / f"{split}.bin", block_size=T, batch_size=cfg.train.batch_size, seed=cfg.seed + 1,
            rank=dist.rank, world_size=dist.world_size, device=device,
        ).fixed_batches(cfg.train.eval_iters)
        for split in ("train", "val")
    }  # fmt: skip


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


def _restore(ckpt: dict, state: StepState, run: RunDir) -> None:
    """Load a checkpoint's states and step; a mismatch (another model or data) is one line, no traceback."""
    state_dict = model_state(ckpt)
    problem = shape_mismatch({k: v.shape for k, v in state.raw_model.state_dict().items()}, state_dict)
    try:
        if problem:
            raise ValueError(problem)
        state.raw_model.load_state_dict(state_dict)
        state.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(
            f"{run.ckpt} does not fit this model ({first_line(e)}); the checkpoint is from another "
            "architecture or gptlab version: resume with the settings it was saved with, or start a new run"
        ) from None
    if "scaler" in ckpt and state.scaler.is_enabled():
        state.scaler.load_state_dict(ckpt["scaler"])
    state.loader.load_state_dict(ckpt["loader"])
    set_rng_state(ckpt["rng"])
    state.step = int(ckpt["step"])


def _start_summary(plan: Plan, cfg: RunConfig, state: StepState, overrides, dist: Dist, best_val) -> dict:
    raw_model, step = state.raw_model, state.step
    resumed = plan.ckpt is not None
    old = plan.previous if resumed else {}
    summary = {
        **old,  # a resume keeps what the run recorded before (final loss, speed, its original overrides)
        "status": "running",
        "step": step,
        "max_iters": cfg.train.max_iters,
        "params": raw_model.num_params(),
        "best_val_loss": None if math.isinf(best_val) else best_val,
        "final_val_loss": old.get("final_val_loss"),
        "tokens_per_s": old.get("tokens_per_s"),  # the run's average (gptlab/training/throughput.py)
        "timed_steps": old.get("timed_steps", 0),
        "timed_s": old.get("timed_s", 0.0),
        "wall_s": old.get("wall_s", 0.0),
        "kv_cache_bytes_per_token": raw_model.kv_cache_bytes_per_token(),
        "overrides": old.get("overrides", list(overrides)),
        "device": str(state.device),
        "dtype": str(state.dtype).removeprefix("torch."),
        "world_size": dist.world_size,
    }
    if cfg.init_from:
        summary["init_from"] = cfg.init_from
    summary.pop("stop_reason", None)
    summary.pop("error", None)
    if resumed:
        summary["resumes"] = [
            *old.get("resumes", []),
            {"step": step, "overrides": overrides, "changes": plan.changes},
        ]
    return summary
