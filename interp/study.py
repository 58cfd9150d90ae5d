"""The induction-head study: train small attention-only models on repeated random tokens and watch the heads.

    python -m interp.study --n-layer 2 --out runs/study_2l     # develops an induction head in layer 1
    python -m interp.study --n-layer 1 --out runs/study_1l     # cannot: one layer has no previous-token head to build on
    python heads.py run=runs/study_2l data_dir=runs/study_2l/data   # the full report + metrics over steps

Data: each training sequence is a random segment of P token ids repeated until the window is full, with P drawn
per sequence from [seg_min, seg_max]. Varying P matters: with one fixed period (data=induction, induction_len=32)
a model can predict the copies with a head that looks a fixed distance back, which even a 1-layer model learns, so
no induction head is needed (docs/heads.md shows this). With varying P only "find the earlier copy of the current
token and take the token after it" works, and that needs two layers (Olsson et al. 2022; Elhage et al. 2021).

The run directory looks like train.py's: ckpt.pt (gptlab checkpoint, ids tokenizer), metrics.jsonl with "train"
and "heads" rows (interp.tracking.head_metrics_snapshot every --heads-every steps), and data/val.bin +
data/meta.json so heads.py can measure val loss, the ICL score and ablations on the same distribution.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def varied_repeats(
    n: int, T: int, vocab: int, seg_min: int, seg_max: int, rng: np.random.Generator
) -> np.ndarray:
    """`(n, T)` int64: row r is a random segment of length P_r ~ U[seg_min, seg_max] repeated to fill T tokens."""
    out = np.empty((n, T), dtype=np.int64)
    for r in range(n):
        P = int(rng.integers(seg_min, seg_max + 1))
        seg = rng.integers(0, vocab, size=P)
        out[r] = np.tile(seg, T // P + 1)[:T]
    return out


def write_val(ddir: Path, rows: np.ndarray, vocab: int) -> None:
    """A prepared-data folder (val.bin + meta.json) whose windows start at row boundaries."""
    ddir.mkdir(parents=True, exist_ok=True)
    rows.astype(np.uint16).tofile(ddir / "val.bin")
    meta = {
        "format": "gptlab-data",
        "version": 1,
        "name": "induction_varied",
        "tokenizer": "ids",
        "vocab_size": vocab,
        "dtype": "uint16",
        "eot_id": None,
        "val_tokens": int(rows.size),
        "sample_align": int(rows.shape[1]),
    }
    (ddir / "meta.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description="train an attention-only model on repeated random tokens")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seg-min", type=int, default=8)
    ap.add_argument("--seg-max", type=int, default=32)
    ap.add_argument("--position", default="rope")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--heads-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from model import GPT, GPTConfig
    from training.checkpoint import save_checkpoint

    from .tracking import head_metrics_snapshot

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = GPTConfig(
        vocab_size=args.vocab,
        block_size=args.block,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        mlp="none",
        position=args.position,
    )
    model = GPT(cfg)
    meta = {"tokenizer": "ids", "vocab_size": args.vocab, "eot_id": None, "dtype": "uint16"}
    val = varied_repeats(
        512, args.block + 1, args.vocab, args.seg_min, args.seg_max, np.random.default_rng(args.seed + 1)
    )
    write_val(out / "data", val, args.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    log = open(out / "metrics.jsonl", "w")
    vx = torch.from_numpy(val[:64])

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            logits, _ = model(vx[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, args.vocab), vx[:, 1:].reshape(-1)).item()
        model.train()
        return loss

    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.heads_every == 0 or step == args.steps:
            rows = head_metrics_snapshot(model, meta, "cpu")
            log.write(json.dumps({"kind": "heads", "step": step, "heads": rows}) + "\n")
            vl = val_loss()
            log.write(json.dumps({"kind": "eval", "step": step, "val_loss": vl}) + "\n")
            log.flush()
            best = max(rows, key=lambda r: r["induction"])
            print(
                f"step {step:5d} | val loss {vl:.3f} | best induction L{best['layer']}H{best['head']} "
                f"{best['induction']:.3f} | {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        if step == args.steps:
            break
        lr = (
            args.lr
            * min(1.0, (step + 1) / 50)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        b = torch.from_numpy(
            varied_repeats(args.batch_size, args.block + 1, args.vocab, args.seg_min, args.seg_max, rng)
        )
        _, loss = model(b[:, :-1], b[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            log.write(json.dumps({"kind": "train", "step": step, "train_loss": loss.item(), "lr": lr}) + "\n")
    log.close()
    save_checkpoint(
        out / "ckpt.pt",
        model=model.state_dict(),
        model_config=cfg.to_dict(),
        step=args.steps,
        config={"study": vars(args)},
        tokenizer=meta,
    )
    print(f"saved {out / 'ckpt.pt'}; next: python heads.py run={out} data_dir={out / 'data'}")


if __name__ == "__main__":
    main()
