"""Every GPU figure in one run, ratios side by side: training MFU, nanoGPT, position schemes, sampling.

    python bench/gpu_bench.py --nanogpt /path/to/nanoGPT        # a CUDA machine: all four tables
    python bench/gpu_bench.py --tables train --micro 16 32 64 --accum 1 4 --profile
    python bench/gpu_bench.py --tables positions --seq 1024 4096 16384
    python bench/gpu_bench.py --device cpu --small              # smoke run of every table on a CPU, tiny shapes

Tables (``--tables``, default all):

* ``train``: GPT-2 124M (the ``model=gpt2`` shape), block 1024, bf16 autocast, ``torch.compile``, fused AdamW,
  flash SDPA, through the training loop's own ``train_step`` (pinned-memory loader, no host sync per step):
  tokens/s and MFU against the 989 TFLOP/s dense bf16 datasheet peak (H100/H200 SXM) and against the 8192^3
  bf16 matmul rate measured on the same card first; one row per micro-batch x grad_accum. ``--profile`` adds
  torch.profiler's top operators for the fastest row.
* ``nanogpt``: nanoGPT's model and training step (its model.py imported from ``--nanogpt`` at run time,
  nothing of it is copied here) beside ours at the identical 124M shape, compile on for both: ours / theirs.
* ``positions``: every position scheme x T x attention path (sdpa with a mask where the scheme has a bias or
  window, flex, explicit): training tokens/s and peak memory at a constant number of tokens per step (so
  memory linear in T shows as a flat column), and tokens/s over RoPE's (sdpa) at T=4096.
* ``sampling``: tokens/s at batch 1 and 16 for the 124M model with the KV cache, eager and compiled (CUDA graphs),
  beside Hugging Face ``GPT2LMHeadModel.generate`` with its cache on the same weights.

Weights are random (speed does not depend on them) and batches are random tokens from a temporary file read
by the project's BatchLoader. Without a CUDA GPU and without ``--device cpu`` it runs nothing. ``--small`` uses
tiny shapes: numbers that show the script works, not what the hardware does. Every table names the device,
torch, the date and the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.sample_bench import load_nanogpt  # noqa: E402
from gptlab.data import BatchLoader  # noqa: E402
from gptlab.data.build import FORMAT  # noqa: E402
from gptlab.errors import UserError, exit_on_user_error  # noqa: E402
from gptlab.model import GPT, POSITIONS, GPTConfig  # noqa: E402
from gptlab.runtime.device import autocast, cpu_description  # noqa: E402
from gptlab.training.config import OptimConfig, TrainConfig  # noqa: E402
from gptlab.training.optim import build_optimizer  # noqa: E402
from gptlab.training.step import StepState, train_step  # noqa: E402

DATASHEET_BF16 = 989e12  # H100 / H200 SXM dense bf16 FLOP/s (no sparsity)
GPT2 = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True, dropout=0.0)
TINY = dict(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64, bias=True, dropout=0.0)
# rope first (the reference row); relative-keys: Shaw keys only (rel_values=False), which flex can fuse
SCHEMES = ["rope", *(p for p in POSITIONS if p != "rope"), "relative-keys"]
IMPLS = ("sdpa", "flex", "explicit")


@dataclass
class Setup:
    """What every table needs: device, precision, shapes, the token file."""

    dev: torch.device
    dtype: torch.dtype
    shape: dict
    data: Path
    compile: bool
    small: bool
    steps: int


# ------------------------------------------------------------------------------------------------ helpers
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed_steps(step, dev: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (compilation, allocator), the device drained."""
    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return (time.perf_counter() - t0) / steps


def token_file(folder: Path, vocab: int, n_tokens: int) -> Path:
    """A prepared-data folder of random uint16 tokens (train.bin + meta.json) for the BatchLoader."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, n_tokens, dtype=np.uint16).tofile(folder / "train.bin")
    meta = {"format": FORMAT, "vocab_size": vocab, "dtype": "uint16", "tokenizer": "ids", "eot_id": None}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "train.bin"


def peak_memory(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


def reset_memory(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def fmt(x, spec: str, missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def our_step(st: Setup, cfg: GPTConfig, batch: int, accum: int, compile: bool):
    """One optimizer step of our training loop (training.step.train_step) on a fresh model; returns
    (step function, its StepState) so callers can read the model and the last loss. A compiled model starts
    from a clean dynamo cache, so each configuration gets its own static-shape graph (as train.py would)."""
    if compile:
        torch.compiler.reset()
    raw = GPT(cfg).to(st.dev)
    ocfg = OptimConfig(lr=6e-4, min_lr=6e-5, weight_decay=0.1, beta2=0.95, warmup_iters=10)
    tcfg = TrainConfig(batch_size=batch, grad_accum=accum, max_iters=10**9, grad_clip=1.0)
    loader = BatchLoader(st.data, block_size=cfg.block_size, batch_size=batch, device=st.dev)
    s = StepState(
        raw_model=raw, model=torch.compile(raw) if compile else raw,
        optimizer=build_optimizer(raw, ocfg, st.dev.type), loader=loader, train=tcfg, optim=ocfg, device=st.dev, dtype=st.dtype,
    )  # fmt: skip
    return (lambda: train_step(s)), s


def matmul_rate(n: int, dtype: torch.dtype, dev: torch.device) -> float:
    """Measured FLOP/s of an n x n x n matmul in ``dtype`` (the card's practical dense peak)."""
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    sec = timed_steps(lambda: a @ b, dev, warmup=3, steps=10)
    return 2 * n**3 / sec


# ------------------------------------------------------------------------------------------------ tables
def table_train(st: Setup, args) -> tuple[int, int] | None:
    """Training throughput of the 124M model: tokens/s, MFU (datasheet and measured), micro-batch x accum."""
    n = 512 if st.small else 8192
    rate = matmul_rate(n, st.dtype, st.dev)
    peak = DATASHEET_BF16 if st.dev.type == "cuda" and st.dtype == torch.bfloat16 else None
    cfg = GPTConfig(**st.shape, position="learned", mlp="gelu", attn_impl="sdpa")
    fpt = GPT(cfg).flops_per_token(cfg.block_size)
    print(
        f"\n## train: {'tiny' if st.small else 'GPT-2 124M'} shape, block {cfg.block_size}, "
        f"{str(st.dtype).removeprefix('torch.')}, compile={st.compile}, fused AdamW, sdpa (flash where it "
        f"applies); {fpt / 1e6:.0f} MFLOP/token; measured {n}^3 matmul: {rate / 1e12:.2f} TFLOP/s"
    )
    print(
        f"{'micro':>5} {'accum':>5} | {'tokens/s':>10} | {'MFU datasheet':>13} | {'of matmul':>9} | {'mem GiB':>7}"
    )
    best, best_tps = None, 0.0
    for micro in args.micro:
        for accum in args.accum:
            reset_memory(st.dev)
            try:
                step, s = our_step(st, cfg, micro, accum, st.compile)
                sec = timed_steps(step, st.dev, warmup=3, steps=st.steps)
            except torch.OutOfMemoryError:
                print(f"{micro:>5} {accum:>5} | {'OOM':>10} |")
                continue
            tps = micro * accum * cfg.block_size / sec
            mfu = f"{100 * fpt * tps / peak:.1f}%" if peak else "n/a"
            print(
                f"{micro:>5} {accum:>5} | {tps:>10,.0f} | {mfu:>13} | "
                f"{100 * fpt * tps / rate:>8.1f}% | {fmt(peak_memory(st.dev), '>7.1f')}",
                flush=True,
            )
            if tps > best_tps:
                best, best_tps = (micro, accum), tps
            del step, s
    if args.profile and best is not None:
        profile(st, cfg, *best)
    return best


def profile(st: Setup, cfg: GPTConfig, micro: int, accum: int) -> None:
    """torch.profiler over a few steps of the fastest configuration: where the time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step, _ = our_step(st, cfg, micro, accum, st.compile)
    timed_steps(step, st.dev, warmup=3, steps=1)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if st.dev.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        timed_steps(step, st.dev, warmup=0, steps=3)
    key = "cuda_time_total" if st.dev.type == "cuda" else "cpu_time_total"
    print(f"\n## profile: micro {micro} x accum {accum}, 3 steps, top operators by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


def table_nanogpt(st: Setup, args, best: tuple[int, int] | None) -> None:
    """nanoGPT's model and step vs ours at the identical shape, both compiled: tokens/s and the ratio."""
    if not args.nanogpt:
        print("\n## nanogpt: skipped (pass --nanogpt PATH, a nanoGPT checkout)")
        return
    mod = load_nanogpt(args.nanogpt)
    if mod is None:
        print(f"\n## nanogpt: skipped (no model.py under {args.nanogpt})")
        return
    micro, accum = best or (args.micro[0], args.accum[0])
    cfg = GPTConfig(**st.shape, position="learned", mlp="gelu", attn_impl="sdpa")
    reset_memory(st.dev)
    ours, _ = our_step(st, cfg, micro, accum, st.compile)
    t_ours = timed_steps(ours, st.dev, warmup=3, steps=st.steps)
    del ours
    reset_memory(st.dev)
    theirs = nanogpt_step(st, mod, micro, accum)
    t_theirs = timed_steps(theirs, st.dev, warmup=3, steps=st.steps)
    tokens = micro * accum * cfg.block_size
    print(
        f"\n## nanogpt: identical shape ({st.shape['n_layer']} layers x {st.shape['n_embd']}, block "
        f"{cfg.block_size}, bias), micro {micro} x accum {accum}, compile={st.compile}, same dtype and data"
    )
    print(f"{'':>8} | {'tokens/s':>10} | {'ms/step':>8}")
    print(f"{'ours':>8} | {tokens / t_ours:>10,.0f} | {1e3 * t_ours:>8.1f}")
    print(f"{'nanoGPT':>8} | {tokens / t_theirs:>10,.0f} | {1e3 * t_theirs:>8.1f}")
    print(f"ours / nanoGPT tokens/s: {t_theirs / t_ours:.2f}x")


def nanogpt_step(st: Setup, mod, micro: int, accum: int):
    """nanoGPT's training step as its train.py runs it: forward under autocast, the next batch fetched
    (memmap, pinned, non-blocking) while the GPU works, backward, clip 1.0, its configure_optimizers AdamW."""
    shape = {k: st.shape[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints parameter counts and the fused choice
        m = mod.GPT(mod.GPTConfig(**shape, dropout=0.0)).to(st.dev)
        opt = m.configure_optimizers(0.1, 6e-4, (0.9, 0.95), st.dev.type)
    if st.compile:
        torch.compiler.reset()
    model = torch.compile(m) if st.compile else m
    data, T = np.memmap(st.data, dtype=np.uint16, mode="r"), shape["block_size"]

    def get_batch():
        ix = torch.randint(len(data) - T, (micro,))
        x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        if st.dev.type == "cuda":
            return x.pin_memory().to(st.dev, non_blocking=True), y.pin_memory().to(st.dev, non_blocking=True)
        return x, y

    batch = [get_batch()]

    def step():
        for group in opt.param_groups:
            group["lr"] = 6e-4
        for _ in range(accum):
            x, y = batch[0]
            with autocast(st.dev, st.dtype):
                _, loss = model(x, y)
                loss = loss / accum
            batch[0] = get_batch()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def table_positions(st: Setup, args) -> None:
    """Every scheme x T x path: training tokens/s and peak memory, constant tokens per step; the last column is
    the scheme's fastest path over RoPE's sdpa at ref_t (the issue's goal: within 1.5x, i.e. >= 0.67)."""
    train = st.dev.type == "cuda"  # torch has no FlexAttention backward on a CPU: forward only there
    tokens = args.tokens_per_step
    print(
        f"\n## positions: {'tiny' if st.small else '124M'} shape, {tokens} tokens per step (batch = tokens / T), "
        f"{'training step (fwd+bwd+AdamW)' if train else 'forward only (no FlexAttention backward on CPU)'}, "
        f"{str(st.dtype).removeprefix('torch.')}, model eager "
        f"({'flex compiles its own kernel' if train else 'flex: torch unfused CPU reference'}); peak memory in GiB"
    )
    head = f"{'position':>13} {'T':>6} |" + "".join(f" {i + ' tok/s':>14} {i + ' GiB':>12} |" for i in IMPLS)
    print(head + f" {'best / rope@' + str(args.ref_t):>16}")
    ref = None
    results = {}
    for T in args.seq:
        for scheme in SCHEMES:
            row = {}
            for impl in IMPLS:
                row[impl] = positions_point(st, scheme, T, impl, max(1, tokens // T), train)
            results[(scheme, T)] = row
            if scheme == "rope" and T == args.ref_t:
                ref = row["sdpa"][0]
            cells = "".join(
                f" {fmt(row[i][0], '>14,.0f', 'OOM')} {fmt(row[i][1], '>12.2f')} |" for i in IMPLS
            )
            fastest = max((r[0] for r in row.values() if r[0]), default=None)
            ratio = fastest / ref if ref and fastest and T == args.ref_t else None
            print(f"{scheme:>13} {T:>6} |{cells} {fmt(ratio, '>15.2f')}x", flush=True)
    if ref is None:
        print(f"(no RoPE row at T={args.ref_t}: add it to --seq for the ratio column)")


def positions_point(st: Setup, scheme: str, T: int, impl: str, batch: int, train: bool):
    """(tokens/s, peak GiB) of one scheme at length T through one attention path; (None, None) on OOM."""
    extra = {"rel_values": False} if scheme == "relative-keys" else {}
    cfg = GPTConfig(
        **{**st.shape, "block_size": T}, position=scheme.split("-")[0], attn_impl=impl, mlp="gelu", **extra
    )
    reset_memory(st.dev)
    try:
        if train:
            step, _ = our_step(st, cfg, batch, 1, compile=False)
        else:
            m = GPT(cfg).to(st.dev).eval()
            x = torch.randint(0, cfg.vocab_size, (batch, T), device=st.dev)

            def step():
                with torch.no_grad(), autocast(st.dev, st.dtype):
                    m(x)

        sec = timed_steps(step, st.dev, warmup=2, steps=max(2, st.steps // 2))
    except torch.OutOfMemoryError:
        return None, None
    return batch * T / sec, peak_memory(st.dev)


def hf_twin(model: GPT):
    """Hugging Face GPT2LMHeadModel computing ``model`` exactly (interop's mapping, tested in
    tests/test_interop_hf.py), fp32 on the CPU."""
    from gptlab.interop.hf import to_hf_model

    return to_hf_model(model)


def table_sampling(st: Setup, args) -> None:
    """Decode tokens/s, KV cache: ours eager, ours compiled (CUDA graphs on a GPU), HF generate."""
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = GPTConfig(**st.shape, position="learned", mlp="gelu")
    ours = GPT(cfg).eval()
    hf = hf_twin(ours).to(st.dev, st.dtype)
    hf.generation_config.pad_token_id = 0
    ours = ours.to(st.dev, st.dtype)
    new, prompt_len = args.new_tokens, 16
    mode = "CUDA graphs (reduce-overhead)" if st.dev.type == "cuda" else "inductor, no graphs"
    print(
        f"\n## sampling: {'tiny' if st.small else '124M'} model, {str(st.dtype).removeprefix('torch.')}, "
        f"prompt {prompt_len} tokens, {new} new, greedy, KV cache; compiled = the fixed-shape step, {mode}"
    )
    print(
        f"{'batch':>5} | {'eager tok/s':>11} | {'compiled tok/s':>14} | {'HF tok/s':>9} | {'compiled/HF':>11} | {'eager/HF':>8} | same tokens as HF"
    )
    for batch in args.sample_batch:
        idx = torch.randint(0, cfg.vocab_size, (batch, prompt_len), device=st.dev)
        sampling_row(st, args, ours, hf, idx, new)


def sampling_row(st: Setup, args, ours: GPT, hf, idx: torch.Tensor, new: int) -> None:
    """One batch size: tokens/s of each generator (mean over the repeats) and the share of equal tokens."""
    batch, prompt_len = idx.shape

    def ours_run(compile):
        return lambda: ours.generate(idx, new, temperature=0, compile=compile)

    def hf_run():
        with torch.no_grad():
            return hf.generate(
                idx, attention_mask=torch.ones_like(idx), max_new_tokens=new, min_new_tokens=new,
                do_sample=False, use_cache=True,
            )  # fmt: skip

    t_e = timed_steps(ours_run(False), st.dev, warmup=1, steps=args.sample_repeats)
    t_c = timed_steps(ours_run(True), st.dev, warmup=2, steps=args.sample_repeats) if st.compile else None
    t_h = timed_steps(hf_run, st.dev, warmup=1, steps=args.sample_repeats)
    same = (ours_run(False)()[:, prompt_len:] == hf_run()[:, prompt_len:]).float().mean().item()

    def tps(t):
        return None if t is None else batch * new / t

    print(
        f"{batch:>5} | {tps(t_e):>11,.0f} | {fmt(tps(t_c), '>14,.0f')} | {tps(t_h):>9,.0f} | "
        f"{fmt(t_c and t_h / t_c, '>10.2f')}x | {t_h / t_e:>7.2f}x | {100 * same:.0f}%",
        flush=True,
    )


# ------------------------------------------------------------------------------------------------ main
def header(st: Setup) -> str:
    if st.dev.type == "cuda":
        p = torch.cuda.get_device_properties(st.dev)
        dev = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    else:
        dev = "CPU"
    kind = (
        "CPU SMOKE RUN (tiny shapes: checks the script, not the hardware)" if st.dev.type == "cpu" else "GPU"
    )
    return (
        f"# gptlab gpu_bench | {kind}\n# device: {dev} | torch {torch.__version__} | "
        f"{datetime.datetime.now().isoformat(timespec='seconds')} | CPU: {cpu_description()}"
    )


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --small: a smoke run)")
    p.add_argument("--small", action="store_true", help="tiny shapes (the CPU smoke run)")
    p.add_argument("--tables", default="train,nanogpt,positions,sampling", help="comma-separated subset")
    p.add_argument("--nanogpt", default=None, help="path to a nanoGPT checkout (folder or git repository)")
    p.add_argument("--micro", type=int, nargs="+", default=None, help="micro-batch sizes (default 16 32)")
    p.add_argument("--accum", type=int, nargs="+", default=None, help="grad_accum values (default 1 4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per point (default 10; small: 3)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="train and sample eagerly")
    p.add_argument("--profile", action="store_true", help="torch.profiler table for the fastest train row")
    p.add_argument(
        "--seq", type=int, nargs="+", default=None, help="positions table T (default 1024 4096 16384)"
    )
    p.add_argument("--tokens-per-step", type=int, default=None, help="positions table (default 16384)")
    p.add_argument("--ref-t", type=int, default=None, help="T of the RoPE reference (default 4096)")
    p.add_argument("--new-tokens", type=int, default=None, help="sampling: new tokens (default 256)")
    p.add_argument(
        "--sample-batch", type=int, nargs="+", default=None, help="sampling batches (default 1 16)"
    )
    p.add_argument("--sample-repeats", type=int, default=3)
    args = p.parse_args(argv)
    small = args.small
    defaults = dict(
        micro=[4, 8] if small else [16, 32], accum=[1, 2] if small else [1, 4], steps=3 if small else 10,
        seq=[32, 64, 128] if small else [1024, 4096, 16384], tokens_per_step=256 if small else 16384,
        ref_t=64 if small else 4096, new_tokens=16 if small else 256, sample_batch=[1, 4] if small else [1, 16],
    )  # fmt: skip
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    unknown = set(args.tables.split(",")) - {"train", "nanogpt", "positions", "sampling"}
    if unknown:
        raise UserError(
            f"unknown table(s) {sorted(unknown)}; choose from train, nanogpt, positions, sampling"
        )
    return args


@exit_on_user_error
def main(argv=None):
    args = parse(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("needs a CUDA GPU; ran nothing (a CPU smoke run: --device cpu --small)")
    dev = torch.device(args.device)
    if dev.type == "cpu" and not args.small:
        raise UserError("--device cpu runs the tiny shapes only: add --small")
    if dev.type == "cpu":  # torch's unfused CPU reference of flex warns so; the positions table says it too
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    # one FlexAttention compile per scheme and shape: room for all of them (dynamo's default limit is 8)
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, 256)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tables = args.tables.split(",")
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        shape = TINY if args.small else GPT2
        data = token_file(Path(tmp) / "tokens", shape["vocab_size"], 2_000_000 if args.small else 8_000_000)
        st = Setup(dev, dtype, shape, data, args.compile, args.small, args.steps)
        print(header(st), flush=True)
        best = table_train(st, args) if "train" in tables else None
        if "nanogpt" in tables:
            table_nanogpt(st, args, best)
        if "positions" in tables:
            table_positions(st, args)
        if "sampling" in tables:
            table_sampling(st, args)
    print(f"\n(done: {', '.join(tables)})")


if __name__ == "__main__":
    main()
