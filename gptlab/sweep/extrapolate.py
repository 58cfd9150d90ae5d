"""Length extrapolation: a trained run's val loss at 1×, 2×, 4× and 8× its training block size.

Method (deterministic, no sampling): `windows` windows of the val split are taken at evenly spaced start
offsets; the same start offsets serve every length, so the 1× windows are the prefixes of the 2× windows
and so on. The loss at length L is the mean next-token cross-entropy over all L positions of every window
(as in Press et al. 2022, "Train Short, Test Long"). A model whose positions stop at `block_size`
(`model.max_seq_len` is not None: learned absolute positions) is reported not applicable past it, with
the reason. The result is cached in `<run>/extrapolation.json` and reused while the checkpoint is unchanged.

    python -m gptlab.sweep.extrapolate multirun/positions/model.position=alibi [--windows 32] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gptlab.errors import UserError, exit_on_user_error
from gptlab.rundir.checkpoint import CHECKPOINT_NAMES
from gptlab.rundir.files import read_json, write_json

CACHE_FILE = "extrapolation.json"
CACHE_VERSION = 1
DEFAULT_MULTIPLIERS = (1, 2, 4, 8)
DEFAULT_WINDOWS = 128
TOKENS_PER_BATCH = 16384  # windows are batched so one forward sees at most this many tokens


def window_starts(n_tokens: int, max_len: int, windows: int) -> np.ndarray:
    """`windows` start offsets evenly spaced so that a window of `max_len` + 1 tokens fits at each."""
    last = n_tokens - 1 - max_len
    if last < 0:
        raise ValueError(f"{n_tokens} tokens cannot hold a window of {max_len + 1}")
    return np.linspace(0, last, windows).round().astype(np.int64)


@torch.no_grad()
def window_loss(model, tokens: np.ndarray, starts: np.ndarray, length: int, device) -> tuple[float, int]:
    """Mean next-token loss over every position of the windows tokens[s : s + length] (targets shifted
    by one); returns (loss, number of predicted tokens)."""
    per_batch = max(1, TOKENS_PER_BATCH // length)
    total, count = 0.0, 0
    for i in range(0, len(starts), per_batch):
        chunk = starts[i : i + per_batch]
        w = np.stack([tokens[s : s + length + 1] for s in chunk]).astype(np.int64)  # (B, L+1)
        w = torch.from_numpy(w).to(device)
        x, y = w[:, :-1], w[:, 1:]  # (B, L)
        logits, _ = model(x)  # (B, L, vocab)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count, count


def evaluate_lengths(
    model,
    tokens: np.ndarray,
    block_size: int,
    multipliers=DEFAULT_MULTIPLIERS,
    windows: int = DEFAULT_WINDOWS,
    device="cpu",
    position: str | None = None,
) -> list[dict]:
    """[{multiplier, length, loss, tokens, reason}] for each multiplier; `loss` None with a `reason` when the
    length cannot be evaluated (positions stop at block_size, or the val split is too short)."""
    if windows < 1:
        raise UserError(f"windows={windows} must be >= 1")
    n = len(tokens)
    lengths = {m: int(m * block_size) for m in multipliers}
    fits = [L for L in lengths.values() if L + 1 <= n]
    starts = window_starts(n, max(fits), windows) if fits else None
    max_seq_len = getattr(model, "max_seq_len", None)
    scheme = f"{position} positions" if position else "this model's positions"
    out = []
    for m, L in lengths.items():
        row = {"multiplier": m, "length": L, "loss": None, "tokens": 0, "reason": None}
        if max_seq_len is not None and L > max_seq_len:
            row["reason"] = f"{scheme} stop at block_size {max_seq_len}: longer sequences cannot be evaluated"
        elif L + 1 > n:
            row["reason"] = f"the val split has {n} tokens, too few for {m}× windows of {L + 1}"
        else:
            try:
                row["loss"], row["tokens"] = window_loss(model, tokens, starts, L, device)
            except UserError as e:  # the model refuses the length
                row["reason"] = str(e)
        out.append(row)
    return out


def _val_tokens(run, data_dir: str | Path | None) -> tuple[np.ndarray, Path]:
    """The val split the run was trained against, as a read-only memmap: the folder given, or the run's own
    prepared folder when it holds the data the run trained on (nothing is prepared or written here)."""
    from gptlab.data import find_prepared, load_meta

    if data_dir is None:
        data_cfg = run.config.get("data")
        found = find_prepared(data_cfg, run.meta) if isinstance(data_cfg, dict) else None
        if found is None:
            name = data_cfg.get("name") if isinstance(data_cfg, dict) else "<name>"
            raise UserError(
                f"the run's prepared data is not here (or is not what it trained on); prepare it with "
                f"`python -m data data={name}` or pass --data-dir=<prepared folder>"
            )
        data_dir = found
    data_dir = Path(data_dir)
    if not (data_dir / "val.bin").is_file():
        raise UserError(f"{data_dir} has no val.bin; pass --data-dir=<a folder made by python -m data>")
    meta = load_meta(data_dir)
    if run.meta.get("source_sha256") and meta.get("source_sha256") != run.meta.get("source_sha256"):
        raise UserError(
            f"{data_dir} holds other data than the run was trained on; pass --data-dir=<its folder>"
        )
    return np.memmap(data_dir / "val.bin", dtype=np.dtype(meta["dtype"]), mode="r"), data_dir


def _ckpt_stamp(path: Path) -> dict:
    st = path.stat()
    return {"checkpoint": path.name, "ckpt_size": st.st_size, "ckpt_mtime_ns": st.st_mtime_ns}


def read_cache(
    run_dir: str | Path, multipliers=DEFAULT_MULTIPLIERS, windows: int = DEFAULT_WINDOWS
) -> dict | None:
    """The cached result of `run_dir` if it is still valid for its best checkpoint and these settings."""
    run_dir = Path(run_dir)
    cached = read_json(run_dir / CACHE_FILE)
    ckpt = next((run_dir / n for n in CHECKPOINT_NAMES if (run_dir / n).is_file()), None)
    if (
        cached is None
        or ckpt is None
        or cached.get("version") != CACHE_VERSION
        or cached.get("windows") != windows
    ):
        return None
    if {k: cached.get(k) for k in ("checkpoint", "ckpt_size", "ckpt_mtime_ns")} != _ckpt_stamp(ckpt):
        return None
    have = {r["multiplier"] for r in cached.get("results", [])}
    return cached if set(multipliers) <= have else None


def extrapolate_run(
    run: str | Path,
    multipliers=DEFAULT_MULTIPLIERS,
    windows: int = DEFAULT_WINDOWS,
    device: str = "auto",
    data_dir: str | Path | None = None,
    use_cache: bool = True,
) -> dict:
    """Evaluate a run's best checkpoint at each multiple of its block size; cache and return the result."""
    from gptlab.open_run import load_run
    from gptlab.rundir.checkpoint import resolve_checkpoint
    from gptlab.runtime.device import pick_device

    ckpt_path = resolve_checkpoint(run)
    run_dir = ckpt_path.parent
    if use_cache and ckpt_path.name in CHECKPOINT_NAMES and resolve_checkpoint(run_dir) == ckpt_path:
        cached = read_cache(run_dir, multipliers, windows)
        if cached is not None:
            return cached
    dev = pick_device(device)
    loaded = load_run(ckpt_path, device=dev)
    tokens, data_dir = _val_tokens(loaded, data_dir)
    block_size = loaded.model.config.block_size
    position = loaded.model.config.position
    result = {
        "version": CACHE_VERSION,
        **_ckpt_stamp(ckpt_path),
        "step": loaded.step,
        "block_size": block_size,
        "position": position,
        "windows": windows,
        "val_tokens": len(tokens),
        "data_dir": str(data_dir),
        "results": evaluate_lengths(loaded.model, tokens, block_size, multipliers, windows, dev, position),
    }
    if use_cache:
        write_json(run_dir / CACHE_FILE, result)
    return result


def format_result(result: dict) -> str:
    lines = [f"{'length':>8}  {'×':>3}  val loss"]
    for r in result["results"]:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else f"n/a ({r['reason']})"
        lines.append(f"{r['length']:>8}  {r['multiplier']:>2}×  {loss}")
    return "\n".join(lines)


def _run_arg(s: str) -> str:
    return s.removeprefix("run=")  # accept sample.py-style `run=<dir>` too


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m gptlab.sweep.extrapolate",
        description="Val loss of trained runs at multiples of their training block size.",
    )
    p.add_argument("runs", nargs="+", type=_run_arg, help="run directories or checkpoint files")
    p.add_argument("--multipliers", type=int, nargs="+", default=list(DEFAULT_MULTIPLIERS))
    p.add_argument("--windows", type=int, default=DEFAULT_WINDOWS, help="val windows per length")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--data-dir", default=None, help="prepared data folder (default: the run's data config)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write extrapolation.json")
    args = p.parse_args(argv)
    for run in args.runs:
        res = extrapolate_run(
            run, args.multipliers, args.windows, args.device, args.data_dir, not args.no_cache
        )
        print(f"{run}  ({res['position']}, block_size {res['block_size']}, step {res['step']})")
        print(format_result(res))


if __name__ == "__main__":
    main(sys.argv[1:])
