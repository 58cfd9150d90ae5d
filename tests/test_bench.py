"""bench/: every script runs in its smallest setting (a smoke run: the numbers mean nothing, the script works
end to end on the current code), and reaches other code through public names only.

Each smoke run starts the script as a user would (a subprocess from the checkout root), so every one of them
pays for a fresh interpreter and torch import: they are all marked slow.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from gptlab.data import DataConfig, prepare

BENCH = ROOT / "bench"
# Private names a bench script may still reach, each with the reason. torch documents torch._dynamo.config as
# the compiler's per-component configuration module (torch.compiler.config's page); it has no public alias.
ALLOWED_PRIVATE = {"torch._dynamo.config"}


def run_bench(*args: str, timeout: int = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


# ---------------------------------------------------------------------------------------------- smoke runs
def smoke_attention(tmp_path):
    out = run_bench("bench/attention.py", "--small")
    assert "explicit/sdpa time" in out and "\n    32 |" in out


def smoke_checksum_bench(tmp_path):
    out = run_bench("bench/checksum_bench.py", "--mb", "1")
    assert "sha256" in out and "blake2b" in out
    prepared = prepare(DataConfig(out_dir=str(tmp_path / "chars"), max_documents=1), quiet=True)
    out = run_bench("bench/checksum_bench.py", str(prepared))
    assert "check_prepared (every prepare() call)" in out


def smoke_data_bench(tmp_path):
    out = run_bench("bench/data_bench.py", "--small")
    assert "prepare again (nothing changed)" in out and "BatchLoader cpu, block 1024" in out


def smoke_gpu_bench(tmp_path):
    out = run_bench("bench/gpu_bench.py", "--device", "cpu", "--small", timeout=1500)  # compiles: minutes
    assert "CPU SMOKE RUN" in out and "(done: train, nanogpt, positions, sampling)" in out


def smoke_heads_bench(tmp_path):
    out = run_bench("bench/heads_bench.py", "--small", "--out", str(tmp_path))
    assert "heads.html" in out and (tmp_path / "heads_1x2x32_T32" / "heads" / "heads.html").is_file()


def smoke_sample_bench(tmp_path):
    out = run_bench("bench/sample_bench.py", "--small")
    assert "cache == no cache: True" in out  # the script's own check of the KV cache
    assert "matches 2*n_layer*n_kv_head*head_dim*4: True" in out


def smoke_train_bench(tmp_path):
    """--smoke: the record recipe on a tiny budget, timed to a loose target (no nanoGPT)."""
    from gptlab.runtime.device import cpu_description

    out = run_bench("bench/train_bench.py", "--smoke", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith("record ")]
    assert len(rows) == 1 and cpu_description() in rows[0]
    fields = rows[0].split()
    assert fields[1] == "1"  # one seed
    to_target = [line for line in out.splitlines() if line.startswith("time to target:")]
    assert to_target and "steps of 5" in to_target[0]
    step = int(fields[7])  # the first kept step at or below the smoke target, a multiple of 5 within 30
    assert step % 5 == 0 and 0 < step <= 30
    assert float(fields[8]) >= float(fields[9]) > 0  # wall from process start >= loop time
    assert "note:" not in out  # the untimed twin ended with the timed run's exact loss


def smoke_threads_bench(tmp_path):
    out = run_bench("bench/threads_bench.py", "--only", "decode tiny", "--repeats", "1", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith("| decode tiny b1 |")]
    assert out.startswith("CPU: ") and len(rows) == 1  # one workload, one thread count, the CPU named


SMOKE = {name.removeprefix("smoke_"): fn for name, fn in globals().items() if name.startswith("smoke_")}


def test_every_bench_script_has_a_smoke_run():
    assert sorted(p.stem for p in BENCH.glob("*.py")) == sorted(SMOKE)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_smoke_run(script, tmp_path):
    SMOKE[script](tmp_path)


@pytest.mark.slow
@pytest.mark.browser
def test_heads_bench_live_page_smoke_run(chromium):
    chromium.close()  # only skips without Chromium/Playwright: the script starts its own browser
    out = run_bench(
        "bench/heads_bench.py", "--live", "--no-report", "--live-repeats", "1", "--page-tokens", "64",
        "--page-repeats", "1",
    )  # fmt: skip
    assert "input event -> redrawn frame" in out and "64 tokens" in out


# ---------------------------------------------------------------------------------------------- public names
def private_uses(path: Path) -> list[str]:
    """Dotted names in ``path`` that reach a private (``_name``, not dunder) module, name or attribute of
    something it imported."""

    def private(part: str) -> bool:
        return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))

    tree = ast.parse(path.read_text(), str(path))
    imported, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                imported.add((a.asname or a.name).split(".")[0])
                if any(private(p) for p in a.name.split(".")):
                    found.append(a.name)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                imported.add(a.asname or a.name)
                dotted = f"{node.module}.{a.name}"
                if any(private(p) for p in dotted.split(".")):
                    found.append(dotted)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:  # whole chains only
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if not isinstance(cur, ast.Name) or cur.id not in imported:
                continue
            dotted = ".".join([cur.id, *reversed(chain)])
            parts = dotted.split(".")
            for i, part in enumerate(parts):
                if private(part) and ".".join(parts[: i + 2]) not in ALLOWED_PRIVATE:
                    found.append(dotted)
                    break
    return sorted(set(found))


def test_bench_scripts_use_public_names_only():
    found = {p.name: private_uses(p) for p in sorted(BENCH.glob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_public_name_check_finds_private_uses(tmp_path):
    f = tmp_path / "b.py"
    f.write_text(
        "import torch\nfrom data import integrity\nfrom model._x import y\nfrom m import _z\n"
        "integrity._verified.clear()\ntorch._dynamo.reset()\ntorch._dynamo.config.recompile_limit = 1\n"
        "args = object()\nargs._worker\n"
    )
    assert private_uses(f) == ["integrity._verified.clear", "m._z", "model._x.y", "torch._dynamo.reset"]
