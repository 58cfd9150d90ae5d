"""Output folders (issue 19.1, 19.13): one rule, rundir.outdir.check_out_dir, for export.py out=, heads.py out=,
compare.py -o and python -m data data.out_dir=. A tool replaces only what it wrote; every refusal is one line and
leaves everything as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import load_entry_point
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gptlab.data import load_meta, prepare
from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint
from gptlab.rundir.outdir import CHECKOUT, check_out_dir, mark_out_dir

ROOT = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root`` with its content (None for folders): compared before and after a refusal."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def refused(match: str, fn, *args, **kw) -> str:
    with pytest.raises(UserError, match=match) as e:
        fn(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def fake_run(path: Path) -> Path:
    """A run directory as far as any folder check can tell (its files; never loaded here)."""
    path.mkdir(parents=True)
    (path / "ckpt.pt").write_bytes(b"weights")
    (path / "summary.json").write_text('{"status": "finished"}')
    return path


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    fake_run(root / "base")
    fake_run(root / "other")
    return root


# ---------------------------------------------------------------------------------------------- the rule itself
@pytest.mark.parametrize("tool", ["export", "heads", "compare", "data"])
def test_every_tool_refuses_a_file_home_the_checkout_and_code_folders(tool, tmp_path):
    f = tmp_path / "README.md"
    f.write_text("mine")
    refused(r"out=.*README.md is a file; pass a folder", check_out_dir, f, tool, "out")
    refused(r"is the home directory", check_out_dir, Path.home(), tool, "out", overwrite=True)
    refused(r"is the gptlab checkout", check_out_dir, CHECKOUT, tool, "out", overwrite=True)
    refused(r"holds the gptlab checkout", check_out_dir, CHECKOUT.parent, tool, "out", overwrite=True)
    refused(
        r"is a code folder of the checkout", check_out_dir, CHECKOUT / "data", tool, "out", overwrite=True
    )
    assert f.read_text() == "mine"


@pytest.mark.parametrize("tool", ["export", "heads", "compare", "data"])
def test_every_tool_refuses_the_run_it_reads_a_folder_holding_it_and_other_runs(tool, runs):
    before = snapshot(runs)
    base = runs / "base"
    refused(rf"out={base} is {base}, which", check_out_dir, base, tool, "out", sources=[base], overwrite=True)
    refused(
        rf"out={runs} holds {base}, which", check_out_dir, runs, tool, "out", sources=[base], overwrite=True
    )
    refused(  # a checkpoint file as the source: its run directory is protected
        rf"holds {base / 'ckpt.pt'}", check_out_dir, runs, tool, "out", sources=[base / "ckpt.pt"]
    )
    other = runs / "other"
    refused(
        rf"out={other} is a run directory", check_out_dir, other, tool, "out", sources=[base], overwrite=True
    )
    assert snapshot(runs) == before


def test_export_replaces_only_an_earlier_export(tmp_path, runs):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused(
        r"not written by export.py \(no .gptlab-export", check_out_dir, mine, "export", "out", overwrite=True
    )
    refused(
        r"not written by export.py", check_out_dir, runs, "export", "out", overwrite=True
    )  # any runs folder
    prev = mark_out_dir(tmp_path / "prev", "export")
    (prev / "config.json").write_text("{}")
    refused(r"holds an earlier export; pass overwrite=true", check_out_dir, prev, "export", "out")
    assert check_out_dir(prev, "export", "out", overwrite=True) == prev
    fake_run(prev / "moved_in")  # a run moved into an old export is never replaced with it
    refused(r"holds a run directory \(.*moved_in\)", check_out_dir, prev, "export", "out", overwrite=True)
    new = tmp_path / "new"
    assert check_out_dir(new, "export", "out", claim=False) == new and not new.exists()  # made by export_hf


def test_tools_that_write_named_files_never_overwrite_one_they_did_not_write(tmp_path):
    for tool, name in (("heads", "heads.csv"), ("compare", "summary.md"), ("data", "train.bin")):
        d = tmp_path / tool
        d.mkdir()
        (d / name).write_text("mine")
        refused(rf"already holds {name}, which .* did not write", check_out_dir, d, tool, "out")
        assert (d / name).read_text() == "mine" and not (d / f".gptlab-{tool}").exists()
        assert check_out_dir(d, tool, "out", own=True) == d  # the tool's own default place
        other = tmp_path / f"{tool}-other"
        other.mkdir()
        (other / "unrelated.txt").write_text("x")
        assert check_out_dir(other, tool, "out") == other  # nothing to overwrite: written, and marked
        (other / name).write_text("written by the tool")
        assert check_out_dir(other, tool, "out") == other  # marked: its own files again


# ---------------------------------------------------------------------------------------------- export.py
def export_cfg(**kw):
    return OmegaConf.create(
        {"run": None, "out": None, "format": "hf", "verify": True, "overwrite": False, **kw}
    )


def test_export_never_replaces_the_runs_folder_or_the_run_it_exports(runs):
    export = load_entry_point("export")

    before = snapshot(runs)
    base = runs / "base"
    for out in (runs, base):
        refused(
            r"which export.py reads", export.export, export_cfg(run=str(base), out=str(out), overwrite=True)
        )
    refused(
        r"is a run directory",
        export.export,
        export_cfg(run=str(base), out=str(runs / "other"), overwrite=True),
    )
    assert snapshot(runs) == before


@pytest.mark.slow
def test_export_on_the_command_line_refuses_in_one_line(runs, tmp_path):
    f = tmp_path / "README.md"
    f.write_text("mine")
    for out, msg in ((runs, "which export.py reads"), (f, "is a file")):
        r = subprocess.run(
            [sys.executable, "export.py", f"run={runs / 'base'}", f"out={out}", "overwrite=true"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["base", "other"] and f.read_text() == "mine"


# ---------------------------------------------------------------------------------------------- heads.py
@pytest.fixture(scope="module")
def head_run(tmp_path_factory) -> Path:
    data_cfg = yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text())
    meta = load_meta(prepare(data_cfg, quiet=True))
    cfg = GPTConfig(vocab_size=meta["vocab_size"], block_size=16, n_layer=1, n_head=2, n_embd=16)
    run = tmp_path_factory.mktemp("headrun") / "run"
    save_checkpoint(run / "ckpt.pt", model=GPT(cfg).state_dict(), model_config=cfg.to_dict(), step=1,
                    config={"data": data_cfg}, tokenizer=meta)  # fmt: skip
    return run


def heads_cfg(*overrides):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("heads", overrides=["text=ROMEO: hi there", "ablation.enabled=false", *overrides])


def test_heads_out_refusals(head_run, tmp_path):
    from gptlab.interp.run_report import run_report

    f = tmp_path / "README.md"
    f.write_text("mine")
    refused(r"is a file", run_report, heads_cfg(f"run={head_run}", f"out={f}"))
    refused(
        rf"is {head_run}, which heads.py reads", run_report, heads_cfg(f"run={head_run}", f"out={head_run}")
    )
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "heads.html").write_text("my page")
    refused(r"already holds heads.html", run_report, heads_cfg(f"run={head_run}", f"out={theirs}"))
    assert (theirs / "heads.html").read_text() == "my page" and f.read_text() == "mine"
    ckpt = head_run / "ckpt.pt"
    assert sorted(p.name for p in head_run.iterdir()) == ["ckpt.pt"] and ckpt.stat().st_size > 0


@pytest.mark.slow
def test_heads_writes_into_its_own_folder_again_and_again(head_run, tmp_path):
    from gptlab.interp.run_report import run_report

    out = tmp_path / "o"
    for _ in range(2):
        assert run_report(heads_cfg(f"run={head_run}", f"out={out}"))["out"] == out
    assert (out / ".gptlab-heads").is_file() and (out / "heads.csv").is_file()


@pytest.mark.slow
def test_heads_out_that_is_a_file_on_the_command_line_is_one_line(head_run, tmp_path):
    f = tmp_path / "README.md"
    f.write_text("mine")
    r = subprocess.run([sys.executable, str(ROOT / "heads.py"), f"run={head_run}", f"out={f}"],
                       cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: out={f} is a file; pass a folder (new or empty) to write into"
    ]


# ---------------------------------------------------------------------------------------------- compare.py
def sweep_dir(root: Path) -> Path:
    for i, (pos, loss) in enumerate((("rope", 1.5), ("alibi", 1.4))):
        r = root / str(i)
        r.mkdir(parents=True)
        summary = {
            "status": "finished",
            "best_val_loss": loss,
            "params": 1000,
            "overrides": [f"model.position={pos}"],
        }
        (r / "summary.json").write_text(json.dumps(summary))
    return root


def compare_main(*argv, capsys=None) -> tuple[int, str]:
    compare = load_entry_point("compare")

    with pytest.raises(SystemExit) as e:
        compare.main([*map(str, argv), "--no-extrapolate"])
    return e.value.code, capsys.readouterr().err if capsys else ""


def test_compare_o_refusals(tmp_path, capsys):
    compare = load_entry_point("compare")

    sweep = sweep_dir(tmp_path / "sweep")
    f = tmp_path / "README.md"
    f.write_text("mine")
    code, err = compare_main(sweep, "-o", f, capsys=capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: -o {f} is a file; pass a folder (new or empty) to write into"
    ]
    code, err = compare_main(sweep, "-o", sweep / "0", capsys=capsys)
    assert code == 2 and "is a run directory" in err and err.count("\n") == 1
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "summary.md").write_text("my summary")
    code, err = compare_main(sweep, "-o", theirs, capsys=capsys)
    assert code == 2 and "already holds summary.md" in err
    assert (theirs / "summary.md").read_text() == "my summary" and f.read_text() == "mine"
    # its own places: the sweep directory (default or named), and a fresh folder, again and again
    for argv in (
        [sweep],
        [sweep, "-o", sweep],
        [sweep, "-o", tmp_path / "cmp"],
        [sweep, "-o", tmp_path / "cmp"],
    ):
        assert compare.main([*map(str, argv), "--no-extrapolate"]).name == "summary.md"


def test_compare_with_a_summary_of_wrong_types_is_not_a_traceback(tmp_path, capsys):
    compare = load_entry_point("compare")

    sweep = sweep_dir(tmp_path / "sweep")
    bad = {"status": "finished", "best_val_loss": "abc", "final_val_loss": [1, 2], "params": {"a": 1},
           "step": "x", "wall_s": {"s": 1}, "tokens_per_s": "fast", "overrides": {"model.position": "rope"}}  # fmt: skip
    (sweep / "0" / "summary.json").write_text(json.dumps(bad))
    (sweep / "1" / "metrics.jsonl").write_text(
        '{"kind": "eval", "step": "x", "val_loss": "abc"}\n{"kind": "eval", "step": 2, "val_loss": {"a": 1}}\n'
    )
    (sweep / "2").mkdir()  # lists where dicts are expected
    (sweep / "2" / "summary.json").write_text("[1, 2]")
    (sweep / "2" / "job_status.json").write_text('["failed"]')
    (sweep / "2" / "config.yaml").write_text("- a\n- b\n")
    (sweep / "2" / "extrapolation.json").write_text("[1]")
    md = compare.main([str(sweep)])  # with the extrapolation step: it reads each run's cache
    table = md.read_text()
    assert "| `0` | finished |" in table and "abc" not in table  # the bad values read as absent
    assert "1.4000" in table  # the good run keeps its numbers
    assert "| `2` | incomplete |" in table
