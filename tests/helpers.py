"""Helpers shared by several test files (``from helpers import tiny``): one copy of each.

* ``tiny`` / ``perturb``: a small GPT in eval mode, optionally with larger random weights.
* ``small_train`` / ``cfg_with`` / ``train_small``: the overrides, the composed Hydra config and a real training
  run of a tiny char model on the CPU.
* ``make_run``: a run directory holding a tiny GPT's checkpoint (no training).
* ``record_run``: a run directory's records (config.yaml, metrics.jsonl, summary.json), no weights.
* ``load_entry_point``: an entry point's functions (its ``main``), reached through runpy, never an import.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint
from gptlab.sweep.runs import parse_overrides

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- models
def perturb(m: GPT, std: float = 0.3) -> GPT:
    """Larger random weights (in place), so differences are far above float noise (init is small and smooth)."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * std)
    return m


def tiny(position: str = "rope", n_kv_head: int | None = None, window: int | None = None, *, std: float = 0.0,
         **kw) -> GPT:  # fmt: skip
    """A small GPT in eval mode: vocabulary 37, block_size 16, 2 layers, 4 heads, n_embd 32; ``kw`` overrides
    any config field. ``std`` > 0: ``perturb`` the weights by that much (from torch's global generator)."""
    cfg = dict(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, position=position)
    cfg.update(kw)
    m = GPT(GPTConfig(n_kv_head=n_kv_head, window=window, **cfg)).eval()
    return perturb(m, std) if std else m


# ---------------------------------------------------------------------------------------------- training
def small_train(max_iters: int) -> list[str]:
    """Overrides for a very small char model and budget: a few seconds of training on the CPU."""
    return [
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.batch_size=4",
        f"train.max_iters={max_iters}", "train.eval_interval=4", "train.eval_iters=2", "train.log_interval=1",
        "train.sample_tokens=0", "optim.warmup_iters=2",
    ]  # fmt: skip


def cfg_with(data_dir: str | Path, *overrides: str, max_iters: int = 12) -> DictConfig:
    """configs/config.yaml composed as train.py would: ``small_train``, the data folder, then ``overrides``."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[*small_train(max_iters), f"data.out_dir={data_dir}", *overrides])


def train_small(data_dir: str | Path, run: str | Path, *overrides: str, max_iters: int = 12) -> dict:
    """Train the ``small_train`` model on the CPU into ``run`` (data prepared in ``data_dir``); its summary."""
    from gptlab.training.loop import train

    given = [*small_train(max_iters), "train.device=cpu", *overrides]
    return train(
        cfg_with(data_dir, "train.device=cpu", *overrides, max_iters=max_iters), run, overrides=given
    )


# ---------------------------------------------------------------------------------------------- run folders
CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # make_run's char vocabulary
BLOCK = 16  # make_run's block_size


def make_run(
    path: Path, *, position="learned", n_kv_head=None, tokenizer="char", seed=0, chars=CHARS, **model
) -> Path:
    """A tiny GPT with large random weights (so greedy output varies), saved as ``path/best.pt``.

    tokenizer "char" (``chars``, default ``CHARS``) or "gpt2"; block_size ``BLOCK``; 2 layers, 4 heads, n_embd 32
    (``model`` overrides any GPTConfig field)."""
    if tokenizer == "char":
        meta = {
            "tokenizer": "char",
            "vocab_size": len(chars),
            "chars": chars,
            "eot_id": None,
            "dtype": "uint16",
        }
    else:
        meta = {"tokenizer": "gpt2", "vocab_size": 50257, "eot_id": 50256, "dtype": "uint16"}
    shape = {"block_size": BLOCK, "n_layer": 2, "n_head": 4, "n_embd": 32}
    cfg = GPTConfig(
        vocab_size=meta["vocab_size"], n_kv_head=n_kv_head, position=position, **{**shape, **model}
    )
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    path.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path / "best.pt",
        model=model.state_dict(),
        model_config=cfg.to_dict(),
        tokenizer=meta,
        config={},
        step=0,
        best_val_loss=None,
    )
    return path


RECORD_MODEL = {"position": "rope", "n_kv_head": None, "n_head": 4, "block_size": 64}  # record_run's config


def record_run(root: Path, name: str, overrides: list[str], status="finished", evals=None, **summary) -> Path:
    """``root/name`` as train.py leaves it, without weights: config.yaml (``RECORD_MODEL`` plus the model.*
    overrides), metrics.jsonl (a train and an eval row per ``evals`` entry (step, val loss, elapsed s)) and
    summary.json (``status``, the last step, ``overrides``, ``summary``)."""
    d = root / name
    d.mkdir(parents=True)
    model = dict(RECORD_MODEL)
    for k, v in parse_overrides(overrides).items():
        if k.startswith("model."):
            model[k.split(".", 1)[1]] = yaml.safe_load(v)
    (d / "config.yaml").write_text(yaml.safe_dump({"model": model, "train": {"max_iters": 100}, "seed": 1}))
    evals = evals if evals is not None else [(50, 2.5, 5.0), (100, 2.1, 10.0)]
    with open(d / "metrics.jsonl", "w") as f:
        for step, loss, t in evals:
            f.write(json.dumps({"kind": "train", "step": step, "train_loss": loss + 0.1}) + "\n")
            f.write(json.dumps({"kind": "eval", "step": step, "val_loss": loss, "elapsed_s": t}) + "\n")
    s = {"status": status, "step": evals[-1][0] if evals else 0, "max_iters": 100, "overrides": overrides}
    s.update(summary)
    (d / "summary.json").write_text(json.dumps(s))
    return d


# ---------------------------------------------------------------------------------------------- entry points
def load_entry_point(name: str) -> SimpleNamespace:
    """The entry point ``<name>.py`` (train, sample, heads, export, compare) run by runpy under its own name, so
    its ``__main__`` block does not run; its functions as attributes (``load_entry_point("compare").main``).
    Nothing imports an entry point (tests/test_layers.py): this is how a test calls one in this process, where
    it does not call the library API the entry point is made of."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / f"{name}.py"), run_name=name))
