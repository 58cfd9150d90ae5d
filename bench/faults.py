"""Fault and bad-input cases as a user meets them: each command run for real, its exit code and the line it printed.

    python bench/faults.py            # about two minutes on 2 CPU cores; prints a Markdown table

Every case starts the real entry point (train.py, sample.py, heads.py, python -m data, compare.py) in a
subprocess, in a temporary folder, with a tiny model. The table is what the reliability issue asks to see:
no traceback anywhere, one line that says what to do, nothing lost. tests/test_faults.py asserts the same
behaviours; this script shows them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.batch_size=4",
    "train.max_iters=8", "train.eval_interval=4", "train.eval_iters=2", "train.sample_tokens=0",
]  # fmt: skip
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def line_of(text: str) -> str:
    """The line a user reads: the last error/warning/stop line, else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for key in (
        "error:",
        "warning:",
        "interrupted",
        "stopped",
        "resume:",
        "run in ",
        "preparing",
        "note:",
        "done:",
    ):
        hits = [ln for ln in lines if ln.startswith(key)]
        if hits:
            return hits[-1]
    return lines[-1] if lines else ""


class Cases:
    def __init__(self, tmp: Path):
        self.tmp, self.rows = tmp, []
        self.data = tmp / "prepared"

    def train_args(self, run: Path, *extra: str) -> list[str]:
        return ["train.py", *SMALL, f"data.out_dir={self.data}", f"hydra.run.dir={run}", *extra]

    def run(self, case: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           input=stdin, timeout=600)  # fmt: skip
        self.record(case, r.returncode, r.stdout + r.stderr)
        return r

    def record(self, case: str, code: int, text: str) -> None:
        traceback = " **(traceback!)**" if "Traceback" in text else ""
        self.rows.append((case, code, line_of(text).replace("|", "\\|")[:300] + traceback))
        print(f"{code:>4}  {case}", file=sys.stderr, flush=True)

    def popen(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists():
        time.sleep(0.05)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gptlab-faults-"))
    c = Cases(tmp)
    rng = random.Random(0)
    a = tmp / "alibi"
    c.run(
        "train, stopped after 4 steps (alibi)",
        c.train_args(a, "model.position=alibi", "train.stop_after_iters=4"),
    )
    c.run(
        "resume as printed (train.resume=true + run dir only)",
        ["train.py", "train.resume=true", f"hydra.run.dir={a}"],
    )
    b = tmp / "b"
    c.run("train, stopped after 4 steps", c.train_args(b, "train.stop_after_iters=4"))
    c.run(
        "resume with model.position=alibi (changes the model)",
        c.train_args(b, "train.resume=true", "model.position=alibi"),
    )
    c.run(
        "resume with optim.lr=0.01 and train.batch_size=8",
        c.train_args(b, "train.resume=true", "optim.lr=0.01", "train.batch_size=8"),
    )
    c.run(
        "resume with train.max_iters=12 (safe: applied, recorded)",
        c.train_args(b, "train.resume=true", "train.max_iters=12"),
    )
    c.run("resume a finished run, same max_iters", c.train_args(b, "train.resume=true", "train.max_iters=12"))
    c.run("new run in an existing run dir (forgot resume)", c.train_args(b))
    c.run("train.overwrite=true in an existing run dir", c.train_args(b, "train.overwrite=true"))
    c.run("train.resume=true in a dir without ckpt.pt", c.train_args(tmp / "empty", "train.resume=true"))

    long = tmp / "long"
    first = c.popen(c.train_args(long, "train.max_iters=100000", "train.eval_interval=100000"))
    wait_for(long / "metrics.jsonl")
    c.run("a second trainer on the same run dir", c.train_args(long, "train.max_iters=100000"))
    time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate()
    c.record("SIGTERM while training", first.returncode, out + err)

    p = c.popen(
        c.train_args(
            tmp / "int2", "train.max_iters=100000", "train.eval_interval=50", "train.eval_iters=5000"
        )
    )
    wait_for(tmp / "int2" / "metrics.jsonl")
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    time.sleep(1.5)  # the step ends, the evaluation starts
    p.send_signal(signal.SIGINT)
    out, err = p.communicate()
    c.record("Ctrl-C twice (second one during an evaluation)", p.returncode, out + err)

    p = c.popen(c.train_args(tmp / "startup"))
    time.sleep(0.4)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate()
    c.record("Ctrl-C during start-up (imports)", p.returncode, out + err)

    k = tmp / "killed"
    kill_args = c.train_args(k, "train.max_iters=40", "train.ckpt_interval=1")
    for i in range(3):
        p = c.popen(kill_args + (["train.resume=auto"] if i else []))
        wait_for(k / "ckpt.pt")
        time.sleep(rng.uniform(0.05, 0.5))
        p.kill()
        p.communicate()
    c.run("resume=auto after three kill -9 (checkpoint every step)", kill_args + ["train.resume=auto"])
    with open(k / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 41, "train_lo')
    c.run(
        "resume with a torn last metrics line (max_iters 44)",
        kill_args + ["train.resume=true", "train.max_iters=44"],
    )
    (k / "loss.png").unlink()
    c.run(
        "resume=auto of a finished run whose loss.png a kill took",
        kill_args + ["train.resume=auto", "train.max_iters=44"],
    )

    (c.data / "train.bin").write_bytes(bytes((c.data / "train.bin").stat().st_size))
    c.run("zeroed train.bin", c.train_args(tmp / "zeroed"))
    meta_f = c.data / "meta.json"
    meta_f.write_text(meta_f.read_text().replace('"vocab_size": ', '"vocab_size": 1', 1))
    c.run("edited meta.json vocab_size", c.train_args(tmp / "edited"))
    more_cases(c, tmp)

    for case, extra in [
        ("seed=abc", ["seed=abc"]),
        ("train.threads=-1", ["train.threads=-1"]),
        ("train.stop_after_iters=-1", ["train.stop_after_iters=-1"]),
        ("optim.lr=abc", ["optim.lr=abc"]),
        ("train.foo=1", ["train.foo=1"]),
        ("model.position=absolute", ["model.position=absolute"]),
        ("data=shakspeare", ["data=shakspeare"]),
        ("train.dtype=float16 on a CPU", ["train.dtype=float16", "train.max_iters=2"]),
    ]:
        c.run(f"train.py {case}", c.train_args(tmp / f"cfg{len(c.rows)}", *extra))
    afile = tmp / "afile"
    afile.write_text("")
    c.run("train.py hydra.run.dir=<a file>", ["train.py", f"hydra.run.dir={afile}"])

    run = b
    latin = tmp / "latin1.txt"
    latin.write_bytes("Caf\xe9".encode("latin-1"))
    c.run("sample.py foo=1", ["sample.py", f"run={run}", "foo=1"])
    c.run(
        "sample.py num_samples=2000000",
        ["sample.py", f"run={run}", "num_samples=2000000", "max_new_tokens=64"],
    )
    c.run("sample.py prompt_file=<a folder>", ["sample.py", f"run={run}", f"prompt_file={tmp}"])
    c.run("sample.py prompt_file=<Latin-1 file>", ["sample.py", f"run={run}", f"prompt_file={latin}"])
    c.run("sample.py run=<missing>", ["sample.py", f"run={tmp / 'nope'}"])
    junk = tmp / "junk.pt"
    junk.write_bytes(b"not a checkpoint" * 100)
    c.run("sample.py run=<junk file>", ["sample.py", f"run={junk}"])
    import torch

    ck = torch.load(run / "ckpt.pt", weights_only=True)
    ck["model"]["blocks.0.attn.q_proj.weight"][0, 0] = float("nan")
    torch.save(ck, tmp / "nan.pt")
    c.run("sample.py run=<checkpoint with NaN weights>", ["sample.py", f"run={tmp / 'nan.pt'}"])
    c.run(
        "heads.py text_file=<Latin-1 file>",
        ["heads.py", f"run={run}", f"text_file={latin}", f"out={tmp / 'h'}"],
    )
    c.run(
        "heads.py max_tokens=1", ["heads.py", f"run={run}", "text=ROMEO", "max_tokens=1", f"out={tmp / 'h'}"]
    )
    victim = tmp / "victim"
    victim.mkdir()
    (victim / "train.bin").write_bytes(b"precious")
    ck = torch.load(run / "ckpt.pt", weights_only=True)
    ck["config"]["data"] = {
        "name": "evil",
        "source": "files",
        "path": "/etc/hostname",
        "out_dir": str(victim),
    }
    torch.save(ck, tmp / "hostile.pt")
    c.run(
        "heads.py on a checkpoint naming other files",
        ["heads.py", f"run={tmp / 'hostile.pt'}", "text=ROMEO: hi", f"out={tmp / 'h2'}"],
    )
    untouched = (victim / "train.bin").read_bytes() == b"precious" and len(list(victim.iterdir())) == 1
    c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (victim folder untouched: {untouched})")
    c.run("python -m data data=shakspeare", ["-m", "data", "data=shakspeare"])
    c.run("compare.py <not a folder>", ["compare.py", str(afile)])
    print("| case | exit | what the user reads |\n|---|---|---|")
    for case, code, line in c.rows:
        print(f"| {case} | {code} | {line} |")


def more_cases(c: Cases, tmp: Path) -> None:
    """Divergence, leftovers, a finished run's summary, a full disk, a code-carrying checkpoint, sweeps."""
    import json

    import torch

    nan = tmp / "nan-run"
    c.run(
        "loss diverges to NaN with train.ckpt_interval=1",
        c.train_args(
            nan, "train.max_iters=30", "train.ckpt_interval=1", "optim.lr=1e5", "optim.warmup_iters=0"
        ),
    )
    ck = torch.load(nan / "ckpt.pt", weights_only=True)
    finite = all(v.isfinite().all() for v in ck["model"].values() if v.is_floating_point())
    c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (ckpt.pt finite: {finite}, step {ck['step']})")

    r = tmp / "left"
    c.run("train, stopped after 4 steps", c.train_args(r, "train.stop_after_iters=4"))
    (r / ".ckpt.pt.dead1234.tmp").write_bytes(bytes(4096))
    c.run("resume with a kill's leftover .ckpt.pt.*.tmp", c.train_args(r, "train.resume=true"))
    left = sorted(p.name for p in r.glob(".*.tmp"))
    c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (leftover temps now: {left or 'none'})")
    before = json.loads((r / "summary.json").read_text())
    c.run("resume a finished run (same settings)", c.train_args(r, "train.resume=true"))
    after = json.loads((r / "summary.json").read_text())
    kept = all(after.get(k) == before.get(k) for k in ("final_val_loss", "tokens_per_s", "overrides"))
    c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (final_val_loss, tokens_per_s, overrides kept: {kept})")

    full = tmp / "tmpfs"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(full)],
                             capture_output=True).returncode == 0  # fmt: skip
    if mounted:
        try:
            c.run("disk full at the first checkpoint (160 KB tmpfs)", c.train_args(full / "run"))
            status = json.loads((full / "run" / "summary.json").read_text()).get("status")
            c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (summary status: {status})")
            c.run(
                "disk full while preparing data (same tmpfs)", ["-m", "data", f"data.out_dir={full / 'prep'}"]
            )
            left = (full / "prep").exists()
            c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (half-prepared folder left: {left})")
        finally:
            subprocess.run(["umount", str(full)], capture_output=True)
    else:
        c.rows.append(("disk full (tmpfs)", "-", "not run: mounting a tmpfs needs root"))

    evil = tmp / "evil.pt"
    marker = tmp / "pwned"
    evil.write_bytes(_code_carrying_checkpoint(marker))
    c.run("sample.py run=<checkpoint carrying code>", ["sample.py", f"run={evil}"])
    c.rows[-1] = (*c.rows[-1][:2], c.rows[-1][2] + f" (code ran: {marker.exists()})")

    sweep = tmp / "sweep"
    p = c.popen(["train.py", "-m", *SMALL, f"data.out_dir={c.data}", "train.max_iters=100000",
                 "train.eval_interval=100000", "model.position=rope,alibi", f"hydra.sweep.dir={sweep}",
                 "hydra.callbacks.sweep_summary.extrapolate=false"])  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list(sweep.glob("*/metrics.jsonl")):
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate()
    c.record("SIGTERM during a sweep", p.returncode, out + err)


def _code_carrying_checkpoint(marker: Path) -> bytes:
    """A torch file whose unpickling would create ``marker`` (made in a child, so nothing here runs it)."""
    code = (
        "import io, pathlib, sys, torch\n"
        "class P:\n"
        "    def __reduce__(self):\n"
        f"        return (pathlib.Path.touch, (pathlib.Path({str(marker)!r}),))\n"
        "b = io.BytesIO()\n"
        "torch.save({'format': 'gptlab-checkpoint', 'version': 1, 'model': {}, 'x': P()}, b)\n"
        "sys.stdout.buffer.write(b.getvalue())\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout


if __name__ == "__main__":
    main()
