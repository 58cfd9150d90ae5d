"""heads.py end to end on tiny checkpoints: the files it writes, bad input, over-steps plots, the training snapshot."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from gptlab.errors import UserError
from gptlab.interp import metrics as M
from gptlab.interp.run_report import run_report
from gptlab.interp.run_serve import start_server
from gptlab.interp.tracking import head_metrics_snapshot, probe_for
from gptlab.model import GPT, GPTConfig
from gptlab.rundir.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def char_data():
    from gptlab.data import load_meta, prepare

    cfg = yaml.safe_load((ROOT / "configs/data/shakespeare_char.yaml").read_text())
    return cfg, load_meta(prepare(cfg, quiet=True))


def _save_run(run_dir: Path, data_cfg, meta, **model_kw) -> Path:
    kw = dict(
        vocab_size=meta["vocab_size"], block_size=32, n_layer=2, n_head=4, n_embd=32, position="learned"
    )
    kw.update(model_kw)
    cfg = GPTConfig(**kw)
    torch.manual_seed(0)
    m = GPT(cfg)
    save_checkpoint(
        run_dir / "ckpt.pt",
        model=m.state_dict(),
        model_config=cfg.to_dict(),
        step=7,
        config={"data": data_cfg},
        tokenizer=meta,
    )
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, char_data):
    return _save_run(tmp_path_factory.mktemp("run"), *char_data, n_kv_head=2)


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("heads", overrides=list(overrides))


def test_report_writes_every_file(run_dir, tmp_path):
    out = tmp_path / "out"
    res = run_report(
        _cfg(
            f"run={run_dir}",
            f"out={out}",
            "layer=1",
            "head=3",
            "ablation.batch_size=2",
            "icl.batch_size=2",
            "probe.batch_size=2",
        )
    )
    names = {p.name for p in out.iterdir()}
    for f in (
        "heads.csv",
        "heads.json",
        "heads.html",
        "patterns_grid.png",
        "pattern_L1H3.png",
        "heatmap_induction.png",
        "heatmap_prev_token.png",
        "heatmap_zero_ablation.png",
        "heatmap_mean_ablation.png",
        "composition.csv",  # the circuits
        "composition.png",
        "logit_lens.png",
        "heatmap_copying.png",
        "heatmap_dla.png",
    ):
        assert f in names, f
    rows = list(csv.DictReader(open(out / "heads.csv")))
    assert len(rows) == 2 * 4
    assert [int(r["kv_head"]) for r in rows[:4]] == [0, 0, 1, 1]  # GQA: 4 query heads on 2 kv heads
    doc = json.loads((out / "heads.json").read_text())
    assert len(doc["heads"]) == 8 and "icl_score" in doc["model_scores"]
    assert len(doc["text_tokens"]) == 32  # split=val by default: block_size tokens of val.bin
    # the table agrees with the metrics measured directly on the same probe
    from gptlab.open_run import load_run

    run = load_run(run_dir)
    probe = probe_for(run.model, run.meta, 2)
    ind = M.induction(run.model.attention_patterns(probe), probe)
    assert float(rows[5]["induction"]) == pytest.approx(ind[1, 1].item(), abs=1e-4)
    assert len(res["summary"]) >= 5 and res["summary"][0].startswith("induction")
    # circuits: composition.csv, the new columns, the baseline and the logit lens
    comp = list(csv.DictReader(open(out / "composition.csv")))
    assert list(comp[0]) == ["layer_a", "head_a", "layer_b", "head_b", "kind", "score"]
    assert len(comp) == 3 * 4 * 4  # Q, K, V for every (layer-0 head, layer-1 head)
    from gptlab.interp import circuits as CI

    want = CI.composition_scores(CI.layer_weights(run.model), CI.offsets_for(run.model))
    for r in comp[::7]:
        v = want[r["kind"]][int(r["layer_a"]), int(r["head_a"]), int(r["layer_b"]), int(r["head_b"])]
        assert float(r["score"]) == pytest.approx(float(v), abs=1e-5)
    assert {"copying", "copying_ratio", "dla", "dla_share"} <= set(rows[0])
    assert 0 <= float(rows[0]["copying"]) <= 1
    assert set(doc["composition_baseline"]) == {"Q", "K", "V"}
    assert [r["layer"] for r in doc["logit_lens"]] == ["embed", 0, 1]
    assert any(line.startswith("K-composition") for line in res["summary"])
    html = (out / "heads.html").read_text()
    assert "https://" not in html and "http://" not in html


def test_text_option_and_tokens(run_dir, tmp_path):
    res = run_report(_cfg(f"run={run_dir}", f"out={tmp_path}", "text=ROMEO: hello", "ablation.enabled=false"))
    assert res["report"].tokens == list("ROMEO: hello")
    assert res["report"].patterns.shape == (2, 4, 12, 12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["text=" + "a" * 40], "takes at most 32"),  # learned positions: block_size 32
        (["text=''"], "empty"),
        (["layer=2"], "layer=2 is out of range"),
        (["head=4"], "head=4 is out of range"),
        (["head=-1"], "head=-1 is out of range"),
        (["split=test"], "not val or train"),
        (["text=hi", "split=val"], "only one of"),
        (["probe.batch_size=0"], "probe.batch_size must be an integer >= 1, got 0"),
        (["metrics.batch_size=-3"], "metrics.batch_size must be an integer >= 1, got -3"),
        (["threads=-2"], "threads must be an integer >= 1"),
        (["threads=true"], "threads must be an integer >= 1"),
        (["probe.batch_size=abc"], "probe.batch_size must be an integer >= 1, got 'abc'"),
        (["probe.reps=1"], "probe.reps must be an integer >= 2"),
        (["icl.batch_size=0"], "icl.batch_size must be an integer >= 1"),
        (["ablation.batches=-1"], "ablation.batches must be an integer >= 0"),
        (["ablation.seq_len=1"], "ablation.seq_len must be an integer >= 2"),
        (["top=0"], "top must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_clear_line(run_dir, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message) as e:
        run_report(_cfg(f"run={run_dir}", f"out={tmp_path}", *overrides))
    assert "\n" not in str(e.value)


def test_missing_checkpoint_and_missing_run(tmp_path):
    with pytest.raises(UserError, match="no best.pt or ckpt.pt"):
        run_report(_cfg(f"run={tmp_path}"))
    with pytest.raises(UserError, match="pass run="):
        run_report(_cfg())


@pytest.mark.slow
def test_cli_exit_code_and_no_litter(run_dir, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    bad = subprocess.run(
        [sys.executable, str(ROOT / "heads.py"), f"run={tmp_path}"],  # a directory without a checkpoint
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr
    out = tmp_path / "o"
    ok = subprocess.run(
        [
            sys.executable,
            str(ROOT / "heads.py"),
            f"run={run_dir}",
            f"out={out}",
            "ablation.enabled=false",
            "icl.batch_size=2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert "previous-token" in ok.stdout and "heads.html" in ok.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no outputs/, .hydra/ or log files


def test_snapshot_for_training(run_dir, char_data):
    from gptlab.open_run import load_run

    model = load_run(run_dir).model
    model.train()
    rows = head_metrics_snapshot(model, char_data[1], "cpu")
    assert model.training  # mode restored
    assert len(rows) == 8 and {r["layer"] for r in rows} == {0, 1}
    for r in rows:
        assert set(r) == {
            "layer",
            "head",
            "induction",
            "duplicate",
            "entropy",
            "mean_distance",
            "prev_token",
            "sink",
            "local",
        } | ({"k_composition"} if r["layer"] > 0 else set())  # read from the weights: later layers only
        assert all(isinstance(v, (int, float)) for v in r.values())
        assert 0 <= r["induction"] <= 1 and 0 <= r["entropy"] <= 1.0001
    assert json.loads(json.dumps(rows)) == rows
    assert rows == head_metrics_snapshot(model, char_data[1], "cpu")  # fixed probe: reproducible


def test_plot_over_steps(run_dir, tmp_path, char_data):
    rows = []
    for step in (0, 100, 200):
        hs = [
            {"layer": l, "head": h, "induction": step / 200 * (l == 1 and h == 2), "prev_token": 0.1}
            for l in range(2)
            for h in range(4)
        ]
        rows.append({"kind": "heads", "step": step, "heads": hs})
    rows.insert(1, {"kind": "train", "step": 50, "train_loss": 1.0})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    try:
        res = run_report(_cfg(f"run={run_dir}", f"out={tmp_path}", "steps.only=true"))
        names = sorted(p.name for p in res["files"])
        assert names == ["heads_over_steps_induction.png", "heads_over_steps_prev_token.png"]
        from gptlab.interp.steps import read_head_rows, stack_over_steps

        steps, vals = stack_over_steps(read_head_rows(run_dir / "metrics.jsonl"), "induction")
        assert steps == [0, 100, 200] and vals[:, 1, 2].tolist() == [0.0, 0.5, 1.0]
    finally:
        (run_dir / "metrics.jsonl").unlink()
    with pytest.raises(UserError, match="head_metrics_interval"):
        run_report(_cfg(f"run={run_dir}", f"out={tmp_path}", "steps.only=true"))


def test_over_checkpoints(tmp_path, char_data):
    for step in (10, 20):
        d = _save_run(tmp_path / f"s{step}", *char_data)
        (d / "ckpt.pt").rename(tmp_path / f"step_{step}.pt")
    res = run_report(
        _cfg(
            f"run={tmp_path / 'step_10.pt'}",
            f"out={tmp_path / 'o'}",
            "steps.only=true",
            f"steps.checkpoints={tmp_path}/step_*.pt",
            "steps.metrics=[induction]",
        )
    )
    assert [p.name for p in res["files"]] == ["heads_over_checkpoints_induction.png"]


def test_one_registry_entry_reaches_every_output(run_dir, tmp_path, monkeypatch):
    """A metric added to interp.metrics.HEAD_METRICS alone shows up in the CSV, JSON, heatmap, page and kinds."""
    last_key = lambda p, w: p[..., -1].mean(dim=(-3, -1))  # noqa: E731 - mean attention to the last key
    extra = M.HeadMetric("last_key", "pattern", last_key, kind="last-key", threshold=-1.0)
    registry = (extra, *M.HEAD_METRICS)  # first: its kind wins for every head (threshold -1)
    monkeypatch.setattr(M, "HEAD_METRICS", registry)
    monkeypatch.setattr(M, "METRIC_NAMES", tuple(m.name for m in registry))
    monkeypatch.setattr(M, "KIND_RULES", tuple((m.kind, m.name, m.threshold) for m in registry if m.kind))
    out = tmp_path / "out"
    run_report(_cfg(f"run={run_dir}", f"out={out}", "text=ROMEO: good morrow", "ablation.enabled=false"))
    with open(out / "heads.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[4] == "last_key" and all(r["kind"] == "last-key" for r in rows)
    assert "last_key" in json.loads((out / "heads.json").read_text())["heads"][0]
    assert (out / "heatmap_last_key.png").is_file()
    assert '"last_key"' in (out / "heads.html").read_text()


def test_a_computed_metric_missing_from_the_registry_is_an_error(run_dir, tmp_path, monkeypatch):
    """A table the report computes without a registry entry stops the report (it would be missing from every
    output otherwise)."""
    from gptlab.interp import head_report as R

    real = R.head_metric_tables

    def with_an_unregistered_table(*args, **kwargs):
        tables = real(*args, **kwargs)
        return {**tables, "brand_new": next(iter(tables.values()))}

    monkeypatch.setattr(R, "head_metric_tables", with_an_unregistered_table)
    with pytest.raises(
        ValueError, match=r"\['brand_new'\] are computed but not in interp.metrics.HEAD_METRICS"
    ):
        run_report(_cfg(f"run={run_dir}", f"out={tmp_path / 'out'}", "text=ROMEO", "ablation.enabled=false"))


def test_token_texts_keep_integer_ids_apart():
    from gptlab.data import get_tokenizer
    from gptlab.interp.html import token_texts

    ids_tok = get_tokenizer({"tokenizer": "ids", "vocab_size": 50})
    assert token_texts(ids_tok, ids_tok.encode("3 17 3")) == ["3 ", "17 ", "3 "]
    char_tok = get_tokenizer({"tokenizer": "char", "chars": "ab\n"})
    assert token_texts(char_tok, char_tok.encode("ab\na")) == ["a", "b", "\n", "a"]


def test_every_plot_keeps_its_labels_inside_the_image(run_dir, tmp_path, monkeypatch):
    """No tick label, axis label, title or colour-bar label of any PNG the report draws is cut off."""
    from gptlab.interp import plots

    drawn = {}
    save = plots._save

    def check_then_save(fig, path):
        fig.canvas.draw()
        inked = fig.get_tightbbox(fig.canvas.get_renderer())  # every drawn artist, in inches
        page = fig.bbox_inches
        drawn[Path(path).name] = (inked.x0, inked.y0, page.x1 - inked.x1, page.y1 - inked.y1)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", check_then_save)
    run_report(_cfg(f"run={run_dir}", f"out={tmp_path}", "ablation.batch_size=2", "icl.batch_size=2"))
    assert {"heatmap_induction.png", "heatmap_dla.png", "composition.png", "patterns_grid.png"} <= set(drawn)
    cut = {name: margins for name, margins in drawn.items() if min(margins) < -0.01}
    assert not cut, cut  # negative margin: something sticks out of the image by that many inches


def _bad_data(tmp_path, char_data, vocab_size=None) -> Path:
    """A copy of the prepared char data whose val.bin holds id 60000 among its first tokens."""
    import shutil

    import numpy as np

    from gptlab.data import DataConfig

    d = tmp_path / "bad_data"
    shutil.copytree(DataConfig.from_dict(char_data[0]).resolved_out_dir(), d)
    arr = np.fromfile(d / "val.bin", dtype=char_data[1]["dtype"])
    arr[5] = 60000
    arr.tofile(d / "val.bin")
    if vocab_size:
        meta = json.loads((d / "meta.json").read_text())
        (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": vocab_size}))
        _rechecksum(d)
    return d


def _rechecksum(d):
    """Record val.bin's new checksum: data that is whole, only of another tokenizer (not damaged)."""
    from gptlab.data.integrity import file_checksum

    meta = json.loads((d / "meta.json").read_text())
    meta["fingerprints"]["val"] = file_checksum(d / "val.bin")
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("overrides", [[], ["text=ROMEO", "icl.batch_size=2"]])
def test_token_ids_outside_the_model_are_one_line(run_dir, tmp_path, char_data, overrides):
    """An id past the model's vocabulary in data_dir's val.bin (data of another tokenizer): the check data/'s
    loader makes, with what to do here; never an IndexError."""
    # the data's own meta allows the id, so only the model's vocabulary can refuse it
    bad = _bad_data(tmp_path, char_data, vocab_size=65536)
    if overrides:  # the val text is not read: the id must be in the val batches
        import numpy as np

        arr = np.fromfile(bad / "val.bin", dtype=char_data[1]["dtype"])
        arr[::7] = 60000
        arr.tofile(bad / "val.bin")
        _rechecksum(bad)
    with pytest.raises(
        UserError, match=r"val.bin holds token id 60000, outside the vocabulary of \d+: "
    ) as e:
        run_report(_cfg(f"run={run_dir}", f"out={tmp_path / 'o'}", f"data_dir={bad}", *overrides))
    assert "pass a data_dir prepared with it" in str(e.value) and "\n" not in str(e.value)


def test_ctrl_c_is_one_line(run_dir, tmp_path):
    """Ctrl-C in the middle of the report: `interrupted`, exit 130, no KeyboardInterrupt traceback."""
    out = tmp_path / "o"
    code = f"""
import os, runpy, signal, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ["heads.py", "run={run_dir}", "out={out}", "ablation.enabled=false"]
from gptlab.interp import head_report as report

def analyse(*args, **kwargs):  # the SIGINT a Ctrl-C sends, while the heads are being measured
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)

report.analyse = analyse
runpy.run_path({str(ROOT / "heads.py")!r}, run_name="__main__")  # as `python heads.py ...` runs it
"""
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip() == "interrupted" and "Traceback" not in p.stderr


def test_a_hugging_face_folder_reports_under_runs_and_says_how_to_get_the_rest(tmp_path):
    """heads.py on a Hugging Face model folder: the report goes to runs/hf/<name>/heads (never into the model's
    folder), the output says so, and what needs val data says how to get it (data_dir=)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        vocab_size=50257, n_positions=32, n_embd=16, n_layer=2, n_head=2, n_inner=32
    )
    model_dir = tmp_path / "models" / "tiny-gpt2"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    before = sorted(p.name for p in model_dir.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run(
        [sys.executable, str(ROOT / "heads.py"), f"run={model_dir}", "ablation.batch_size=2"],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    out = Path("runs") / "hf" / "tiny-gpt2" / "heads"
    assert (work / out / "heads.html").is_file() and (work / out / "heads.csv").is_file()
    assert sorted(p.name for p in model_dir.iterdir()) == before  # nothing written into the model's folder
    assert f"the report goes to {out}" in p.stdout and f" files to {out} in " in p.stdout
    hint = "pass data_dir=" + str(ROOT / "data" / "prepared" / "shakespeare_gpt2")
    assert "the ablations" in p.stderr and "the val loss and the ICL score" in p.stderr and hint in p.stderr
    last = [line for line in p.stdout.splitlines() if line.startswith("note: to get ")]
    assert last == [
        "note: to get the val loss and the ICL score and the ablations: prepare data with its tokenizer "
        f"(`python -m data data=shakespeare_gpt2`) and {hint}"
    ]


def test_the_live_viewer_opens_with_the_runs_val_text(run_dir, char_data):
    import numpy as np

    from gptlab.data import DataConfig, get_tokenizer

    srv = start_server(_cfg(f"run={run_dir}", "serve=true", "port=0"))
    try:
        val = np.fromfile(
            DataConfig.from_dict(char_data[0]).resolved_out_dir() / "val.bin", char_data[1]["dtype"]
        )
        want = get_tokenizer(char_data[1]).decode(val[:32].tolist())  # block_size 32
        assert srv.live.info()["sample_text"] == want and len(want) == 32
    finally:
        srv.server_close()


@pytest.mark.parametrize("host", ["host=", "host=null", "host=' '"])
def test_an_empty_host_is_refused(run_dir, host):
    """The socket library reads an empty host as every address: binding beyond loopback must be asked for."""
    with pytest.raises(UserError, match=r"^host= is empty; pass host=127.0.0.1 .*host=0.0.0.0") as e:
        start_server(_cfg(f"run={run_dir}", "serve=true", "port=0", host))
    assert "\n" not in str(e.value)


def test_the_default_sample_fits_the_tokenizer():
    from gptlab.data import get_tokenizer
    from gptlab.interp.live import SAMPLE, default_sample

    assert default_sample(get_tokenizer("gpt2"), 64) == SAMPLE
    ids = get_tokenizer({"tokenizer": "ids", "vocab_size": 50})
    text = default_sample(ids, 64)
    got = ids.encode(text)  # a random segment repeated: an induction probe
    assert len(got) == 48 and got[:24] == got[24:] and len(set(got[:24])) == 24
    chars = get_tokenizer({"tokenizer": "char", "chars": "abc\n"})
    assert set(default_sample(chars, 8)) <= set("abc\n")
