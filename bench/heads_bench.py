"""Time the whole head report (metrics, ablations, PNGs, HTML) for a random-init model of a given shape.

    python bench/heads_bench.py                 # the `small` shape: 6 layers x 6 heads, 384 wide, block 256
    python bench/heads_bench.py --n-layer 12 --n-head 12 --n-embd 768   # a 12 x 12 page

Saves a checkpoint of an untrained model on Shakespeare chars into bench/results/heads_<shape>/, runs
`python heads.py run=<that dir>` in-process with the default settings and prints the stage timings.
The machine may be busy: treat the numbers as indicative and run it more than once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_run(run_dir: Path, n_layer: int, n_head: int, n_embd: int, block: int, position: str) -> Path:
    """A run directory with a random-init checkpoint whose config points at the shakespeare_char data."""
    import torch
    import yaml

    from data import get_tokenizer, load_meta, prepare
    from model import GPT, GPTConfig
    from rundir.checkpoint import save_checkpoint

    data_cfg = yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text())
    meta = load_meta(prepare(data_cfg, quiet=True))
    tok = get_tokenizer(meta)
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=tok.vocab_size,
        block_size=block,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        position=position,
    )
    model = GPT(cfg)
    save_checkpoint(
        run_dir / "ckpt.pt",
        model=model.state_dict(),
        model_config=cfg.to_dict(),
        step=0,
        config={"data": data_cfg},
        tokenizer=meta,
    )
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=384)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--position", default="learned")
    ap.add_argument("--repeat", type=int, default=2, help="runs of the report (the first also warms caches)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from hydra import compose, initialize_config_dir

    import heads

    shape = f"{args.n_layer}x{args.n_head}x{args.n_embd}_T{args.block}"
    run_dir = make_run(
        ROOT / "bench/results" / f"heads_{shape}",
        args.n_layer,
        args.n_head,
        args.n_embd,
        args.block,
        args.position,
    )
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("heads", overrides=[f"run={run_dir}"])
    print(f"shape {shape} ({args.position} positions), CPU threads: ", end="")
    import torch

    print(torch.get_num_threads())
    for r in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = heads.report(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        t = res["timings"]
        print(
            f"run {r}: wall {wall:.1f} s (CPU time, all threads: {cpu:.1f} s) = load+data {wall - sum(v for k, v in t.items() if k != 'total_s'):.1f} s"
            f", patterns+metrics {t['patterns_s']:.1f} s, icl {t['icl_s']:.1f} s, ablations {t['ablation_s']:.1f} s"
            f", PNGs {t['png_s']:.1f} s, html {t['html_s']:.1f} s"
        )
    html = res["files"]["html"]
    print(f"heads.html: {html.stat().st_size / 1e6:.1f} MB at {html}")
    for line in res["summary"]:
        print("  " + line)


if __name__ == "__main__":
    main()
