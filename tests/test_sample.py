"""sample.py: the CLI (happy path, every bad input), seeding, the KV cache, batching and streaming.

Runs are tiny checkpoints written here with training.checkpoint.save_checkpoint (no train.py). References
are independent of sample.py: the model's own no-cache `generate`, the tokenizer's one-shot decode, and
the KV-cache formula 2 * n_layer * n_kv_head * head_dim * itemsize.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import BLOCK, load_entry_point, make_run

from gptlab import sampling
from gptlab.data import get_tokenizer
from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "learned": make_run(root / "learned", position="learned"),
        "rope": make_run(root / "rope", position="rope"),
        "alibi_gqa": make_run(root / "alibi_gqa", position="alibi", n_kv_head=2),
        "gpt2": make_run(root / "gpt2", tokenizer="gpt2", position="rope"),
    }


def load(run_dir: Path):
    """Model and tokenizer read back independently of sample.py."""
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    m = GPT(GPTConfig(**ckpt["model_config"]))
    m.load_state_dict(ckpt["model"])
    return m.eval(), get_tokenizer(ckpt["tokenizer"])


def run_sample(run_dir, **kw):
    """In-process sample.py; returns (stdout, stderr, Generation)."""
    stdin = io.StringIO(kw.pop("_stdin", ""))
    opts = sampling.parse_options({"run": str(run_dir), **kw})
    out, err = io.StringIO(), io.StringIO()
    gen = sampling.sample(opts, stdout=out, stderr=err, stdin=stdin)
    return out.getvalue(), err.getvalue(), gen


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, cwd, input=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "sample.py"), *args],
        capture_output=True,
        text=True,
        input=input,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )


# ----------------------------------------------------------------------------------------------------------
# the CLI


@pytest.mark.slow
def test_cli_greedy_matches_model_generate_and_leaves_no_files(runs, tmp_path):
    """Greedy text equals the model's own no-cache generate; the end line goes to stderr; cwd stays empty."""
    r = cli(f"run={runs['learned']}", "prompt=To be", "temperature=0", "max_new_tokens=40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    model, tok = load(runs["learned"])
    idx = torch.tensor([tok.encode("To be")])
    ref = model.generate(idx, 40, temperature=0.0, use_cache=False)[0, 5:].tolist()
    assert r.stdout == "To be" + tok.decode(ref) + "\n"
    assert re.search(r"1 x 40 tokens in [\d.]+ s: [\d.]+ tokens/s", r.stderr)
    assert "KV cache" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, .hydra/ or log files


@pytest.mark.slow
def test_cli_prompt_from_stdin(runs, tmp_path):
    r = cli(
        f"run={runs['learned']}",
        "prompt=-",
        "temperature=0",
        "max_new_tokens=5",
        cwd=tmp_path,
        input="ROMEO:",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout) == len("ROMEO:") + 5 + 1


def _error_cases(runs, tmp: Path):
    """(name, args, text the message must contain) for every bad input of the issue."""
    (tmp / "trunc").mkdir()
    full = (runs["learned"] / "best.pt").read_bytes()
    (tmp / "trunc" / "best.pt").write_bytes(full[: len(full) // 2])
    torch.save({"weights": torch.zeros(3)}, tmp / "foreign.pt")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint at all")
    learned = f"run={runs['learned']}"
    return [
        ("missing run", [f"run={tmp / 'nope'}"], "no run directory or checkpoint"),
        ("empty run dir", [f"run={tmp}"], "has no best.pt or ckpt.pt"),
        ("no run", [], "no run given"),
        ("truncated", [f"run={tmp / 'trunc'}"], "not a readable gptlab checkpoint"),
        ("foreign torch file", [f"run={tmp / 'foreign.pt'}"], "not a gptlab checkpoint"),
        ("garbage file", [f"run={tmp / 'garbage.pt'}"], "not a readable gptlab checkpoint"),
        ("chars outside vocab", [learned, 'prompt="Grüße~"'], "'ü', 'ß', '~'"),
        ("prompt too long", [learned, "prompt=" + "a" * (BLOCK + 1)], f"block_size {BLOCK}"),
        ("top_p zero", [learned, "top_p=0"], "top_p must be in (0, 1]"),
        ("top_p above one", [learned, "top_p=1.5"], "top_p must be in (0, 1]"),
        ("negative temperature", [learned, "temperature=-0.5"], "temperature must be >= 0"),
        ("bad device", [learned, "device=tpu"], "unknown device"),
        ("zero samples", [learned, "num_samples=0"], "num_samples must be an integer >= 1"),
        ("missing prompt file", [learned, f"prompt_file={tmp / 'none.txt'}"], "does not exist"),
        ("empty prompt, no eot", [learned, "prompt="], "no end-of-text token"),
        ("unknown compile mode", [learned, "compile=fast"], "compile must be true, false or one of"),
        ("compile without cache", [learned, "compile=true", "use_cache=false"], "needs use_cache=true"),
    ] + ([] if torch.cuda.is_available() else [("absent cuda", [learned, "device=cuda"], "no CUDA GPU")])


# A few bad inputs go through a real process (interpreter start-up costs ~3 s of CPU each on this machine);
# the rest run the same Hydra entry point, sample.py's `main` (through runpy), in this process.
IN_SUBPROCESS = {"truncated", "chars outside vocab", "absent cuda"}


@pytest.mark.slow
def test_cli_bad_input_gives_one_line_and_nonzero_exit(runs, tmp_path):
    cases = [c for c in _error_cases(runs, tmp_path) if c[0] in IN_SUBPROCESS]
    procs = [  # all at once: each is mostly interpreter start-up
        subprocess.Popen(
            [sys.executable, str(ROOT / "sample.py"), *args, "max_new_tokens=3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=ENV,
        )
        for _, args, _ in cases
    ]
    for (name, _, needle), p in zip(cases, procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 2, f"{name}: rc {p.returncode}, stderr {err!r}"
        assert out == "", name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
        assert needle in lines[0], f"{name}: {lines[0]!r}"


@pytest.mark.slow
def test_entry_point_bad_input_gives_one_line_and_exit_2(runs, tmp_path, monkeypatch, capsys):
    cases = [c for c in _error_cases(runs, tmp_path) if c[0] not in IN_SUBPROCESS]
    main = load_entry_point("sample").main
    monkeypatch.chdir(tmp_path)
    for name, args, needle in cases:
        monkeypatch.setattr(sys, "argv", ["sample.py", *args, "max_new_tokens=3"])
        with pytest.raises(SystemExit) as exc:
            main()
        out, err = capsys.readouterr()
        assert exc.value.code == 2, f"{name}: {err!r}"
        assert out == "", name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
        assert needle in lines[0], f"{name}: {lines[0]!r}"


# ----------------------------------------------------------------------------------------------------------
# seeding, cache, batching


def test_same_seed_same_text_and_another_seed_differs(runs):
    kw = dict(prompt="A", max_new_tokens=30, temperature=1.0, top_k=None)
    a, _, _ = run_sample(runs["rope"], seed=7, **kw)
    b, _, _ = run_sample(runs["rope"], seed=7, **kw)
    c, _, _ = run_sample(runs["rope"], seed=8, **kw)
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", ["learned", "rope", "alibi_gqa"])
def test_greedy_identical_with_and_without_cache_past_block_size(runs, name):
    n = 3 * BLOCK  # well past block_size
    kw = dict(prompt="Now is the", max_new_tokens=n, temperature=0)
    with_cache, _, g1 = run_sample(runs[name], use_cache=True, **kw)
    without, _, g2 = run_sample(runs[name], use_cache=False, **kw)
    assert g1.steps == g2.steps == n
    assert with_cache == without
    assert len(set(g1.tokens[0])) > 3  # the output really varies, so a wrong cache would show


@pytest.mark.parametrize("name", ["learned", "alibi_gqa"])
def test_compile_true_gives_the_same_text(runs, name, monkeypatch):
    """compile=true: the prompt eagerly, then the fixed-shape decode step (run uncompiled here, torch.compile
    itself is covered by tests/test_model_generate.py's slow test), the same text past block_size."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    kw = dict(prompt="Now is the", max_new_tokens=3 * BLOCK, temperature=0.8, seed=5)
    compiled, err, gen = run_sample(runs[name], compile=True, **kw)
    eager, _, _ = run_sample(runs[name], **kw)
    assert compiled == eager and gen.steps == 3 * BLOCK
    assert err.strip().endswith("decode step compiled (compile time included)")


def test_samples_are_one_batch(runs, monkeypatch):
    """Several samples: one generate_iter call on a (num_samples, T) batch, not a loop over samples."""
    calls = []
    real = GPT.generate_iter

    def spy(self, idx, *a, **k):
        calls.append(tuple(idx.shape))
        yield from real(self, idx, *a, **k)

    monkeypatch.setattr(GPT, "generate_iter", spy)
    out, _, gen = run_sample(runs["rope"], prompt="Hi", num_samples=3, max_new_tokens=10, temperature=1.0)
    assert calls == [(3, 2)]
    assert len(gen.tokens) == 3 and all(len(t) == 10 for t in gen.tokens)
    assert out.count("---------------\n") == 3
    assert len({tuple(t) for t in gen.tokens}) > 1  # independent draws, not one sample copied


def test_greedy_batch_rows_equal_a_single_greedy_run(runs):
    kw = dict(prompt="Hi", max_new_tokens=2 * BLOCK, temperature=0)
    _, _, one = run_sample(runs["alibi_gqa"], num_samples=1, **kw)
    _, _, three = run_sample(runs["alibi_gqa"], num_samples=3, **kw)
    assert three.tokens == one.tokens * 3


def test_streamed_text_equals_printed_text(runs):
    kw = dict(prompt="To", max_new_tokens=25, temperature=1.0, seed=3)
    streamed, _, _ = run_sample(runs["rope"], stream=True, **kw)
    printed, _, _ = run_sample(runs["rope"], stream=False, **kw)
    assert streamed == printed


def test_stream_true_with_several_samples_is_refused(runs):
    with pytest.raises(UserError, match="stream=true needs num_samples=1"):
        sampling.parse_options({"run": str(runs["rope"]), "stream": True, "num_samples": 2})


@pytest.mark.parametrize("name, new", [("alibi_gqa", 5), ("alibi_gqa", 3 * BLOCK), ("learned", 3 * BLOCK)])
def test_kv_cache_size_in_end_line_is_the_cache_really_held(runs, monkeypatch, name, new):
    """The end line's bytes follow 2 * n_layer * n_kv_head * head_dim * 4 x positions x batch and equal the
    largest size the model's KVCache objects really reached."""
    from gptlab.model import kv_cache

    held = []
    real_end = kv_cache.KVCache.end

    def spy_end(self):
        real_end(self)
        held.append(self.bytes())

    monkeypatch.setattr(kv_cache.KVCache, "end", spy_end)
    _, err, gen = run_sample(runs[name], prompt="Hi", num_samples=2, max_new_tokens=new, temperature=0)
    n_kv = 2 if name == "alibi_gqa" else 4
    per_tok = 2 * 2 * n_kv * (32 // 4) * 4  # K and V, 2 layers, n_kv_head, head_dim 8, float32
    positions = min(2 + new - 1, BLOCK)  # prompt + generated tokens but the last, at most block_size kept
    m = re.search(r"KV cache (.+?) = (\d+) sample\(s\) x (\d+) positions x (\d+) B/token", err)
    assert m and tuple(map(int, m.groups()[1:])) == (2, positions, per_tok), err
    assert max(held) == 2 * positions * per_tok


def test_end_line_without_cache(runs):
    _, err, _ = run_sample(runs["alibi_gqa"], prompt="Hi", max_new_tokens=5, use_cache=False)
    assert "KV cache off" in err and "tokens/s" in err


# ----------------------------------------------------------------------------------------------------------
# gpt2: end-of-text and partial UTF-8 while streaming


def test_gpt2_stream_equals_one_shot_decode(runs):
    """A random gpt2-vocab model emits byte tokens that split UTF-8 characters: the streamed text must still
    equal the tokenizer's one-shot decode of all generated tokens."""
    model, tok = load(runs["gpt2"])
    out, _, gen = run_sample(
        runs["gpt2"], prompt="Hello", max_new_tokens=60, temperature=1.0, top_k=None, stop_at_eot=False
    )
    assert out == "Hello" + tok.decode(gen.tokens[0]) + "\n"


def test_empty_prompt_starts_from_eot_for_gpt2(runs):
    out, _, gen = run_sample(runs["gpt2"], prompt="", max_new_tokens=4, temperature=0, stop_at_eot=False)
    assert gen.prompt_len == 1
    model, tok = load(runs["gpt2"])
    ref = model.generate(torch.tensor([[50256]]), 4, temperature=0.0, use_cache=False)[0, 1:].tolist()
    assert gen.tokens[0] == ref


class ScriptedModel(torch.nn.Module):
    """Stands in for GPT: generate_iter yields prepared token columns."""

    def __init__(self, columns):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.columns = columns
        self.yielded = 0

    def generate_iter(self, idx, max_new_tokens, **kw):
        for col in self.columns[:max_new_tokens]:
            self.yielded += 1
            yield torch.tensor(col).view(-1, 1)


def test_stop_at_eot_ends_each_sample_and_the_loop():
    eot = 9
    m = ScriptedModel([[1, 2], [eot, 3], [4, 5], [6, eot], [7, 7], [8, 8]])
    gen = sampling.generate(m, [0], num_samples=2, max_new_tokens=6, eot_id=eot)
    assert gen.tokens == [[1], [2, 3, 5]]
    assert gen.steps == 4 and m.yielded == 4  # stopped once both samples were done
    gen = sampling.generate(ScriptedModel(m.columns), [0], num_samples=2, max_new_tokens=6, eot_id=None)
    assert gen.tokens == [[1, eot, 4, 6, 7, 8], [2, 3, 5, eot, 7, 8]]


@pytest.mark.parametrize("with_bytes", [True, False])
def test_stream_decoder_never_prints_half_characters(with_bytes):
    """Feeding gpt2 tokens one at a time gives pieces that add up to the text, none with U+FFFD."""
    tok = get_tokenizer({"tokenizer": "gpt2"})
    text = "naïve café — 世界 🙂🙂 façade ok"
    ids = tok.encode(text)

    class DecodeOnly:  # a tokenizer without decode_bytes: the fallback path
        def decode(self, ids):
            return tok.decode(ids)

    dec = sampling.StreamDecoder(tok if with_bytes else DecodeOnly())
    pieces = [dec.push([i]) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > 5  # it streamed, not one piece at the end


def test_long_prompt_is_taken_by_a_relative_scheme(runs):
    """rope can go past block_size: a prompt of 3 blocks is accepted and the cache still changes nothing."""
    prompt = ("abcdefghij" * 5)[: 3 * BLOCK]
    kw = dict(prompt=prompt, max_new_tokens=BLOCK, temperature=0)
    a, _, gen = run_sample(runs["rope"], use_cache=True, **kw)
    b, _, _ = run_sample(runs["rope"], use_cache=False, **kw)
    assert gen.prompt_len == 3 * BLOCK and a == b


def test_prompt_file_and_stdin(runs, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("KING:", encoding="utf-8")
    out, _, gen = run_sample(
        runs["rope"], prompt="ignored", prompt_file=str(f), max_new_tokens=3, temperature=0
    )
    assert out.startswith("KING:") and gen.prompt_len == 5
    out, _, gen = run_sample(runs["rope"], prompt_file="-", _stdin="QUEEN:", max_new_tokens=3, temperature=0)
    assert out.startswith("QUEEN:") and gen.prompt_len == 6
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        run_sample(runs["rope"], prompt_file=str(tmp_path / "bad.txt"))
