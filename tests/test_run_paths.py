"""run= resolution (issue 19.14): a run= that looks like a local path and is not there says "no run directory",
never "the hub is offline"; hub ids still go to the hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptlab.errors import UserError
from gptlab.open_run import is_hf_source, load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "run", ["runs/nothing", "multirun/x/0", "./nothing", "../nothing", "~/nothing", "a/b/c", "exports/x"]
)
def test_a_missing_local_looking_run_is_no_run_directory(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ (or anything else) here
    assert not is_hf_source(run)
    with pytest.raises(UserError, match=r"^no run directory or checkpoint at "):
        load_run(run)


@pytest.mark.parametrize("run", ["gpt2", "openai-community/gpt2", "HuggingFaceTB/SmolLM2-135M"])
def test_hub_ids_still_go_to_the_hub(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hf_source(run)


def test_a_local_folder_named_like_an_org_is_a_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myruns").mkdir()
    assert not is_hf_source("myruns/base") and is_hf_source("myorg/base")


def test_sample_py_with_a_missing_run_says_so_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, str(ROOT / "sample.py"), "run=runs/nothing"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: no run directory or checkpoint at runs/nothing; pass run=<run dir or .pt file>"
    ], r.stderr
