"""Time the whole head report (metrics, ablations, circuits, PNGs, HTML), and the live viewer's update.

    python bench/heads_bench.py                 # the `small` shape: 6 layers x 6 heads, 384 wide, block 256
    python bench/heads_bench.py --n-layer 12 --n-head 12 --n-embd 768   # a 12 x 12 page
    python bench/heads_bench.py --live --no-report   # only the live page: 128 tokens, tiny model, in Chromium
    python bench/heads_bench.py --small --out /tmp/hb   # smoke run: 1 layer x 2 heads, 32 wide, block 32, once
    python bench/heads_bench.py --no-report --live --live-tokens 512 --page-tokens 2048   # long texts

The report: saves a checkpoint of an untrained model on Shakespeare chars into bench/results/heads_<shape>/
(``--out DIR``: DIR/heads_<shape>/, with the prepared characters in DIR/data/ instead of data/prepared/),
runs `python heads.py run=<that dir>` in-process with the default settings and prints the stage timings.

The live page (`--live`): the `tiny` model's shape (4 layers x 4 heads, 128 wide, RoPE, SwiGLU, RMSNorm) with
block_size 128, random init, behind interp.serve.HeadServer on an ephemeral port; headless Chromium
(Debian's /usr/bin/chromium via Playwright) replaces the text with a new 128-character text (one input
event), and the page itself measures with performance.now() from that input event to the frame after the
redraw (the debounce delay included), plus the request and the render alone; medians over `--live-repeats`.

The long page (`--page-tokens N`): heads.html of the `tiny` shape (RoPE, block_size 256) for the first N
characters of Shakespeare's val.bin (so N tokens, past the training length), written by `interp.run_report.run_report`;
Chromium opens it `--page-repeats` times and the page measures from the navigation's start to the first frame
drawn after it is ready (reading the file, parsing the data, drawing the thumbnails, the pattern and the
visible tokens); medians, with the file's size.

Every line names the CPU and the load average. The machine may be busy: treat the numbers as indicative and run
it more than once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


FULL = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block": 256, "repeat": 2}
SMALL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block": 32, "repeat": 1}  # --small


def make_run(
    run_dir: Path, n_layer: int, n_head: int, n_embd: int, block: int, position: str, data_dir: Path | None
) -> Path:
    """A run directory with a random-init checkpoint whose config points at the shakespeare_char data
    (prepared into ``data_dir``, default data/prepared/)."""
    import torch
    import yaml

    from gptlab.data import get_tokenizer, load_meta, prepare
    from gptlab.model import GPT, GPTConfig
    from gptlab.rundir.checkpoint import save_checkpoint

    data_cfg = yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text())
    if data_dir is not None:
        data_cfg["out_dir"] = str(data_dir)
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


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _machine() -> str:
    import os

    from gptlab.runtime.device import cpu_description

    return f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.1f}"


def live_bench(repeats: int, T: int = 128) -> None:
    """Median end-to-end update time of the live page for a `T`-token text, measured in Chromium."""
    import random
    import statistics
    import threading

    import torch
    from playwright.sync_api import sync_playwright

    from gptlab.data import get_tokenizer
    from gptlab.interp.live import LiveModel
    from gptlab.interp.serve import HeadServer
    from gptlab.model import GPT, GPTConfig

    chars = "\n !',.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    meta = {"tokenizer": "char", "chars": chars, "vocab_size": len(chars)}
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=len(chars),
        block_size=T,
        n_layer=4,
        n_head=4,
        n_embd=128,
        position="rope",
        norm="rmsnorm",
        mlp="swiglu",
        attn_impl="explicit",
    )
    srv = HeadServer(LiveModel(GPT(cfg), get_tokenizer(meta), title="tiny (bench)"), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    rng = random.Random(0)
    args = CHROMIUM_ARGS
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.url)
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function(
            "() => +(document.body.dataset.updated || 0) >= 1", timeout=60_000
        )  # its sample
        for i in range(repeats + 2):  # the first two warm up the server and the page
            text = "".join(rng.choice(chars[1:]) for _ in range(T))
            page.fill("#text", text)
            page.wait_for_function(f"() => +(document.body.dataset.updated || 0) >= {i + 2}", timeout=60_000)
            u = page.evaluate("() => window.lastUpdate")
            assert u["n_tokens"] == T, u
            if i >= 2:
                rows.append(u)
        browser.close()
    srv.shutdown()
    cpu = _machine()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.endswith("_ms")}
    goal = "goal <= 300 ms up to 512 tokens; " if T <= 512 else ""
    print(
        f"live page, {T} tokens, tiny shape (4 x 4 heads, 128 wide, block {T}), median of {len(rows)} updates [{cpu}]:"
    )
    print(
        f"  input event -> redrawn frame {med['input_to_painted_ms']:.0f} ms ({goal}includes the "
        f"{med['debounce_ms']:.0f} ms debounce)  = request {med['request_ms']:.0f} ms (server {med['server_ms']:.0f} ms)"
        f" + render {med['render_ms']:.0f} ms + the rest (debounce, frame)  [{cpu}]"
    )
    worst = max(r["input_to_painted_ms"] for r in rows)
    print(f"  slowest of the {len(rows)}: {worst:.0f} ms  [{cpu}]")


def page_bench(T: int, repeats: int) -> None:
    """Median load time in Chromium of heads.html for a `T`-token text (tiny shape, RoPE, block 256)."""
    import statistics

    from hydra import compose, initialize_config_dir
    from playwright.sync_api import sync_playwright

    from gptlab.interp.run_report import run_report

    run_dir = make_run(ROOT / "bench/results" / f"heads_long_T{T}", 4, 4, 128, 256, "rope", None)
    import numpy as np
    import yaml

    from gptlab.data import get_tokenizer, load_meta, prepare

    ddir = prepare(yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text()), quiet=True)
    meta = load_meta(ddir)
    val = np.memmap(ddir / "val.bin", dtype=np.dtype(meta["dtype"]), mode="r")[:T]
    text = get_tokenizer(meta).decode([int(i) for i in val])
    text_file = run_dir / "text.txt"
    text_file.write_text(text)
    overrides = [f"run={run_dir}", f"text_file={text_file}", f"max_tokens={T}", "ablation.enabled=false"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("heads", overrides=overrides)
    t0 = time.perf_counter()
    res = run_report(cfg)
    report_s = time.perf_counter() - t0
    html = res["files"]["html"]
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        for i in range(repeats + 1):  # the first warms the browser's caches
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(html.as_uri())
            page.wait_for_function("() => window.loadedMs !== undefined", timeout=120_000)
            n = page.eval_on_selector("#tokens", "b => +b.dataset.n")
            assert n == T, n
            if i:
                times.append(page.evaluate("() => window.loadedMs"))
            page.close()
        browser.close()
    m = _machine()
    print(
        f"heads.html, {T} tokens, tiny shape (4 x 4 heads, 128 wide, RoPE, block 256): "
        f"{html.stat().st_size / 1e6:.1f} MB, written in {report_s:.1f} s (the whole report)  [{m}]"
    )
    print(
        f"  page load (navigation start -> first frame after ready), median of {len(times)}: "
        f"{statistics.median(times):.0f} ms (goal <= 2000 ms), slowest {max(times):.0f} ms  [{m}]"
    )


def report_bench(args) -> None:
    """Time heads.py's report (`interp.run_report.run_report`) on a random-init model of the shape in `args`."""
    from hydra import compose, initialize_config_dir

    from gptlab.interp.run_report import run_report

    shape = f"{args.n_layer}x{args.n_head}x{args.n_embd}_T{args.block}"
    out = args.out or ROOT / "bench/results"
    run_dir = make_run(
        out / f"heads_{shape}",
        args.n_layer,
        args.n_head,
        args.n_embd,
        args.block,
        args.position,
        None if args.out is None else args.out / "data",
    )
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("heads", overrides=[f"run={run_dir}"])
    cpu = _machine()
    print(f"shape {shape} ({args.position} positions) [{cpu}]")
    for r in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_report(cfg)
        wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        t = res["timings"]
        print(
            f"run {r}: wall {wall:.1f} s (CPU time, all threads: {cpu_s:.1f} s) = load+data {wall - sum(v for k, v in t.items() if k != 'total_s'):.1f} s"
            f", patterns+metrics {t['patterns_s']:.1f} s, icl {t['icl_s']:.1f} s, ablations {t['ablation_s']:.1f} s"
            f", circuits {t['circuits_s']:.1f} s, PNGs {t['png_s']:.1f} s, html {t['html_s']:.1f} s  [{cpu}]"
        )
    html = res["files"]["html"]
    print(f"heads.html: {html.stat().st_size / 1e6:.1f} MB at {html}  (goal for 6 x 6: whole report < 30 s)")
    for line in res["summary"]:
        print("  " + line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-layer", type=int, default=None, help="default 6 (--small: 1)")
    ap.add_argument("--n-head", type=int, default=None, help="default 6 (--small: 2)")
    ap.add_argument("--n-embd", type=int, default=None, help="default 384 (--small: 32)")
    ap.add_argument("--block", type=int, default=None, help="default 256 (--small: 32)")
    ap.add_argument("--position", default="learned")
    ap.add_argument(
        "--repeat", type=int, default=None, help="runs of the report (default 2, the first also warms caches)"
    )
    ap.add_argument("--small", action="store_true", help="smoke run: a tiny model, one report (the defaults)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the run and its data (default above)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--live", action="store_true", help="also time the live page's update in Chromium")
    ap.add_argument("--live-repeats", type=int, default=15)
    ap.add_argument(
        "--live-tokens", type=int, nargs="+", default=[128], help="text lengths of the live bench"
    )
    ap.add_argument(
        "--page-tokens", type=int, default=None, help="also time heads.html's load at this length"
    )
    ap.add_argument("--page-repeats", type=int, default=5)
    ap.add_argument("--no-report", action="store_true", help="skip the report benchmark")
    args = ap.parse_args()
    defaults = SMALL if args.small else FULL
    for name, value in defaults.items():  # what is not given on the command line
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.no_report:
        report_bench(args)
    if args.live:
        for T in args.live_tokens:
            live_bench(args.live_repeats, T)
    if args.page_tokens:
        page_bench(args.page_tokens, args.page_repeats)


if __name__ == "__main__":
    main()
