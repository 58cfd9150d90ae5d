"""The command line before Hydra (cli.py): typed text reaches the model as typed, one line for what Hydra cannot
read, each tool's own --help, the renamed thread keys, and the thread rule of gptlab/runtime/device.py.

The references are the strings typed (what a shell hands the program after removing its quotes), read back from
what the tools print: sample.py's echoed prompt and its prompt length, heads.py's tokens in heads.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_run
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gptlab import cli
from gptlab.errors import UserError
from gptlab.runtime.device import FLOPS_PER_THREAD, threads_for

ROOT = Path(__file__).resolve().parents[1]
CHARS = "\n !\"$',-.:;=?ABCDEFGHIJKLMNOPQRSTUVWXYZ\\abcdefghijklmnopqrstuvwxyz{}ßéü"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}

# What a user types in a shell, after the shell removed its quotes: prompt="To be, or not to be" -> this.
TYPED = [
    "To be, or not to be",  # a comma: Hydra alone reads a sweep ("Ambiguous value")
    "What's this?",  # an apostrophe: Hydra alone fails in its lexer
    "Grüß",  # non-ASCII letters: likewise
    'a=b, "quoted" and = signs',  # '=' and double quotes inside
    "-- the end",  # a leading '-'
    "${oc.env:HOME} \\n",  # what OmegaConf would resolve, and a backslash
    "  spaced  ",  # spaces Hydra would strip
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny char-level run (random weights) whose vocabulary holds every character of TYPED."""
    return make_run(tmp_path_factory.mktemp("run"), position="rope", chars=CHARS, block_size=32)


def tool(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )


# ---------------------------------------------------------------------------------------- typed text


@pytest.mark.parametrize("text", TYPED)
def test_typed_prompt_reaches_the_model_as_typed(run_dir, tmp_path, text):
    r = tool(
        "sample.py", f"run={run_dir}", f"prompt={text}", "max_new_tokens=1", "temperature=0", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout[: len(text)] == text  # the echoed prompt
    assert len(r.stdout) == len(text) + 2  # one generated character and the newline
    assert f"(prompt {len(text)} tokens)" in r.stderr  # one char token per typed character went in


def test_the_old_hydra_quoted_form_still_works(run_dir, tmp_path):
    r = tool("sample.py", f"run={run_dir}", 'prompt="To be, or not"', "max_new_tokens=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("To be, or not") and "(prompt 13 tokens)" in r.stderr


def test_readme_heads_text_reaches_the_tokens(run_dir, tmp_path):
    """The README's `python heads.py run=runs/<run> text="ROMEO: good morrow, cousin"`."""
    text = "ROMEO: good morrow, cousin"
    r = tool(
        "heads.py", f"run={run_dir}", f"text={text}", f"out={tmp_path / 'h'}", "ablation.enabled=false",
        "icl.batches=0", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "h" / "heads.json").read_text())["text_tokens"] == list(text)


def test_hydra_quote_round_trips_through_hydra_and_omegaconf():
    tricky = [*TYPED, "", "\\", 'a\\"b\\', "\\${x}", "\\\\${x}", "null", "[a, b]", "1e3", "'", '"', "x\n"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for text in tricky:
            cfg = compose("sample", overrides=[f"prompt={cli.hydra_quote(text)}"])
            assert OmegaConf.to_container(cfg, resolve=True)["prompt"] == text


def test_a_path_hydra_cannot_read_is_quoted_and_other_values_get_one_line():
    assert cli.prepare_argv("prepare", ["data.path=~/books/*.txt"]) == ['data.path="~/books/*.txt"']
    assert cli.prepare_argv("prepare", ["data.path=[a.txt,b.txt]"]) == ["data.path=[a.txt,b.txt]"]  # a list
    with pytest.raises(UserError, match=re.escape("""quote the value for Hydra: 'seed="12 (x)"'""")):
        cli.prepare_argv("sample", ["seed=12 (x)"])
    with pytest.raises(UserError, match="is a sweep .* add -m"):
        cli.prepare_argv("sample", ["run=runs/a,b"])
    with pytest.raises(UserError, match=re.escape("""'be' is not key=value; to pass text with spaces, quote it in the shell: 'prompt=To be'""")):  # fmt: skip
        cli.prepare_argv("sample", ["prompt=To", "be"])
    # flags and their values, sweeps under -m, deletions: left to Hydra
    argv = ["-m", "model.position=rope,alibi", "--cfg", "job", "~wandb", "--info", "defaults"]
    assert cli.prepare_argv("config", argv) == argv


def test_unreadable_value_is_one_line_from_the_tool(tmp_path):
    r = tool("sample.py", "run=x", "top_k=3 (or 4)", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: Hydra cannot read top_k=3 (or 4)") and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------- --help

HELP = [
    (["train.py"], "Train a GPT", "train.<key>=... sets one field"),
    (["sample.py"], "Generate text from a trained run", "prompt="),
    (["heads.py"], "Inspect the learned attention heads of a run", "text="),
    (["export.py"], "Export a run as a Hugging Face model directory", "format=hf"),
    (["compare.py"], "Summarise finished runs", "--no-extrapolate"),
    (["-m", "data"], "tokenize a corpus into data/prepared", "data=shakespeare_char"),
]


@pytest.mark.parametrize("cmd, description, option", HELP, ids=[h[0][-1] for h in HELP])
def test_each_tool_has_its_own_help(cmd, description, option):
    args = [str(ROOT / cmd[0])] if cmd[0].endswith(".py") else cmd
    r = subprocess.run([sys.executable, *args, "--help"], capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr
    assert description in r.stdout and option in r.stdout
    assert "powered by Hydra" not in r.stdout


# ---------------------------------------------------------------------------------------- threads


def test_old_thread_keys_are_renamed_with_one_warning(capsys):
    assert cli.prepare_argv("heads", ["num_threads=1"]) == ["threads=1"]
    assert cli.prepare_argv("config", ["train.num_threads=2"]) == ["train.threads=2"]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: num_threads= is now threads=; the old name will stop working",
        "warning: train.num_threads= is now train.threads=; the old name will stop working",
    ]


def test_a_run_saved_with_the_old_thread_key_still_loads():
    from gptlab.training.config import TrainConfig, from_mapping

    assert from_mapping(TrainConfig, {"num_threads": 3}, "train").threads == 3
    assert from_mapping(TrainConfig, {"num_threads": 3, "threads": 1}, "train").threads == 1


def test_thread_rule():
    per = FLOPS_PER_THREAD
    # batch-1 decoding of the tiny (0.8M) and small (10.6M) shapes: one thread on any machine
    assert threads_for(2 * 0.8e6, cores=16) == 1
    assert threads_for(2 * 10.6e6, cores=16) == 1
    # one thread per FLOPS_PER_THREAD of work, capped by the cores
    assert threads_for(3 * per, cores=16) == 3
    assert threads_for(1e15, cores=16) == 16
    # cores other processes keep busy are not used: a burner on a 2-core machine leaves one
    assert threads_for(1e15, cores=2, load=1.0) == 1
    assert threads_for(1e15, cores=8, load=2.2) == 6
    assert threads_for(1e15, cores=2, load=9.0) == 1
    assert threads_for(0, cores=2) == 1


def test_the_load_is_the_runnable_threads_now_not_the_load_average(tmp_path, monkeypatch):
    """The rule's load is how many other threads are runnable now (Linux's procs_running, less this one); the
    1-minute load average, which still counts a run that just ended, only where there is no /proc/stat."""
    from gptlab.runtime import device

    stat = tmp_path / "stat"
    monkeypatch.setattr(device, "PROC_STAT", str(stat))
    monkeypatch.setattr(device, "LOAD_GAP_S", 0.0)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.2, 0.6))
    stat.write_text("cpu  10 0 5 900\nprocs_running 1\nprocs_blocked 0\n")
    assert device.cpu_load() == 0  # only this thread: an idle machine, whatever the load average says
    assert threads_for(1e15, cores=2, load=device.cpu_load()) == 2
    stat.write_text("procs_running 3\n")
    assert device.cpu_load() == 2
    monkeypatch.setattr(device, "PROC_STAT", str(tmp_path / "missing"))
    assert device.cpu_load() == 1.9


def test_threads_null_applies_the_rule_and_a_number_wins(run_dir, monkeypatch):
    from gptlab import sampling

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("gptlab.runtime.device.cpu_load", lambda: 0.0)
    for threads in (None, 3):
        opts = sampling.parse_options(
            {"run": str(run_dir), "prompt": "a", "max_new_tokens": 1, "threads": threads}
        )
        sampling.sample(opts, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    assert calls == [1, 3]  # a tiny model decoding one sample: one thread
