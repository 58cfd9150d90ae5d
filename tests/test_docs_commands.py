"""Every command in the README's and the docs' ```bash blocks is one the tools accept, the cheap ones run, and
the README's notebook snippet runs.

Each command line is split as a shell splits it. For the entry points (train.py, sample.py, heads.py, export.py,
`python -m data`) the arguments go through what the tool does before Hydra starts (cli.prepare_argv: quoting,
the one-line syntax checks with Hydra's own override parser, unknown keys and config choices composed by
Hydra); compare.py's through its argparse parser; any other `python <file>.py` must name a file that exists.
`runs/<run>` (and docs/sampling.md's `runs/my_run`) stand for a real tiny run: the maximum-likelihood bigram
model of the Shakespeare corpus, written as a GPT (counted, not trained by gradient: the same answer, at once),
whose greedy continuation of a newline is a newline forever, as the default trained model's is.
"""

from __future__ import annotations

import importlib.util
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import load_entry_point
from hydra import compose, initialize_config_dir

from gptlab import cli, sampling
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG = {"train.py": "config", "sample.py": "sample", "heads.py": "heads", "export.py": "export"}
PLACEHOLDERS = ("runs/<run>", "runs/my_run")


@pytest.fixture(scope="module")
def bigram_run(tmp_path_factory) -> Path:
    """A run whose model is the corpus's bigram model: one-hot embeddings, blocks that add nothing, and an
    output head holding log P(next char | char) from the counts of train.bin (add-one smoothed)."""
    from gptlab.data import load_meta, prepare

    data_cfg = yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text())
    prepared = prepare(data_cfg, quiet=True)
    meta = load_meta(prepared)
    ids = np.asarray(np.memmap(prepared / "train.bin", dtype=meta["dtype"], mode="r"), dtype=np.int64)
    V, C = meta["vocab_size"], 128
    counts = np.ones((V, V))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    log_p = np.log(counts / counts.sum(1, keepdims=True))  # [current, next]
    cfg = GPTConfig(
        vocab_size=V, block_size=64, n_layer=1, n_head=2, n_embd=C, position="none", norm="rmsnorm",
        tie_embeddings=False,
    )  # fmt: skip
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if "ln" in name else 0.0)  # norms' gains 1, every weight of the blocks 0
        model.tok_emb.weight[:, :V] = torch.eye(V)
        # RMSNorm scales a one-hot vector by sqrt(C); the head undoes it
        model.lm_head.weight[:, :V] = torch.tensor(log_p.T / np.sqrt(C), dtype=torch.float32)
    run = tmp_path_factory.mktemp("run")
    for name in ("best.pt", "ckpt.pt"):  # as a finished run has them
        save_checkpoint(
            run / name, model=model.state_dict(), model_config=cfg.to_dict(), tokenizer=meta,
            config={"data": data_cfg}, step=0,
        )  # fmt: skip
    return run


def commands(text: str, run: Path | str = "RUN"):
    """(line as written, words) of every simple command in the ```bash blocks of ``text``: split at | && || ;,
    redirections left out, ``runs/<run>`` (and ``runs/my_run``) replaced by ``run``, any other ``<name>`` by
    ``name`` (a placeholder, not a redirection)."""
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for typed in block.replace("\\\n", " ").splitlines():
            line = typed
            for p in PLACEHOLDERS:
                line = line.replace(p, str(run))
            line = re.sub(r"<([\w -]+)>", r"\1", line)
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split, lex.commenters = True, "#"
            words, redirect = [], False
            for w in [*lex, ";"]:
                if redirect:
                    redirect = False
                elif w in ("|", "&&", "||", ";"):
                    if words:
                        yield typed, words
                    words = []
                elif w in (">", ">>", "<", "2>"):
                    redirect = True
                else:
                    words.append(w)


def documented(run: Path | str = "RUN"):
    return [(f.relative_to(ROOT), line, words) for f in DOCS for line, words in commands(f.read_text(), run)]


def entry_point(words: list[str]) -> tuple[str, list[str]] | None:
    """(config name, arguments) of a command that runs an entry point, else None."""
    if words[:3] == ["python", "-m", "data"]:
        return "prepare", words[3:]
    for i, w in enumerate(words):
        if w in CONFIG and words[0] in ("python", "torchrun"):
            return CONFIG[w], words[i + 1 :]
    return None


def test_the_docs_have_commands():
    found = documented()
    assert len(found) > 50 and sum(entry_point(w) is not None for _, _, w in found) > 40


def test_every_documented_command_is_accepted(bigram_run):
    compare = load_entry_point("compare")

    failures = []
    for f, line, words in documented(bigram_run):
        ep = entry_point(words)
        try:
            if ep is not None:
                cli.prepare_argv(ep[0], ep[1])
            elif words[:2] == ["python", "compare.py"]:
                compare.parse_args(words[2:])
            elif words[0] == "python" and words[1].endswith(".py"):
                assert (ROOT / words[1]).is_file(), f"{words[1]} does not exist"
            elif words[:2] == ["python", "-m"]:  # a module of the lab or of a tool the dev extra installs
                assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
        except (Exception, SystemExit) as e:
            failures.append(f"{f}: {line}\n    {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def run_sample_command(args: list[str], stdin: str = "") -> tuple[str, str]:
    """sample.py as its __main__ runs it (the pre-Hydra step, Hydra's composition, the options), in-process."""
    argv = cli.prepare_argv("sample", args)
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("sample", overrides=argv)
    out, err = io.StringIO(), io.StringIO()
    sampling.sample(sampling.parse_options(cfg), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return out.getvalue(), err.getvalue()


def test_documented_sample_commands_run(bigram_run, tmp_path, monkeypatch):
    """Every sample.py command on `runs/<run>` runs as written (compile=true aside: tens of seconds)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opening.txt").write_text("ROMEO:\n")  # docs/sampling.md's prompt_file=opening.txt
    ran = 0
    for f, line, words in documented(bigram_run):
        ep = entry_point(words)
        if (
            ep is None
            or ep[0] != "sample"
            or not any(p in line for p in PLACEHOLDERS)
            or "compile=true" in line
        ):
            continue
        # echo "text" | python sample.py ... prompt=-
        stdin = shlex.split(line.split("|")[0])[1] + "\n" if line.startswith("echo ") else ""
        out, err = run_sample_command(ep[1], stdin)
        assert "tokens/s" in err and out.strip(), f"{f}: {line}\n{err}"
        ran += 1
    assert ran >= 8


def test_readme_greedy_example_prints_text(bigram_run, tmp_path):
    """The README's greedy line, as a user runs it: what it generates is text, not blank lines."""
    args = next(
        w[2:]
        for f, ln, w in documented(bigram_run)
        if f.name == "README.md" and "sample.py" in ln and "temperature=0 " in ln
    )
    r = subprocess.run(
        [sys.executable, str(ROOT / "sample.py"), *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    prompt = next(a.split("=", 1)[1] for a in args if a.startswith("prompt="))
    assert r.stdout.startswith(prompt) and r.stdout[len(prompt) :].strip()


def test_default_prompt_gives_greedy_text(bigram_run):
    """Without prompt= a run continues the start of its training text; from a newline (the old default) this
    model's greedy text is newlines only, and sample.py says so."""
    out, _ = run_sample_command([f"run={bigram_run}", "temperature=0", "max_new_tokens=40"])
    first_line = "HAMLET, PRINCE OF DENMARK"  # the corpus's first line
    assert out.startswith(first_line) and out[len(first_line) :].strip()
    out, err = run_sample_command([f"run={bigram_run}", "prompt=\n", "temperature=0", "max_new_tokens=40"])
    assert out == "\n" * 42 and "greedy decoding produced only whitespace" in err


def test_readme_notebook_snippet_runs(bigram_run, monkeypatch):
    import matplotlib.figure

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Use from Python (a notebook)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("/path/to/gptlab/runs/<run>", str(bigram_run)).replace("/path/to/gptlab", str(ROOT))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert isinstance(scope["fig"], matplotlib.figure.Figure)
    n_layer, n_head = scope["run"].model.config.n_layer, scope["run"].model.config.n_head
    T = len("ROMEO: good morrow, cousin")
    assert scope["patterns"].shape == (n_layer, 1, n_head, T, T)
    assert torch.equal(scope["cache"]["blocks.0.attn.hook_pattern"], scope["patterns"][0])
    assert [t.get_text() for t in scope["fig"].axes[0].get_xticklabels()][:6] == list("ROMEO:")
