"""The head observatory: the in-loop ICL score and K-composition, phases in summary.json and the head report,
and heads.py / sample.py at a kept step (step=)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import train_small
from hydra import compose, initialize_config_dir

from gptlab import sampling
from gptlab.errors import UserError
from gptlab.interp import metrics as M
from gptlab.interp.run_report import run_report
from gptlab.interp.tracking import head_metrics_snapshot, icl_now, mean_k_composition
from gptlab.model import GPT, GPTConfig
from gptlab.open_run import load_run
from gptlab.rundir.layout import RunDir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prepared") / "chars")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, data_dir):
    """A run with head metrics every 4 steps and snapshots every 4 steps."""
    run = tmp_path_factory.mktemp("tracked") / "r"
    summary = train_small(data_dir, run, "train.head_metrics_interval=4", "train.snapshots=every:4")
    return run, summary


# ---------------------------------------------------------------------------------------------- in the loop
def test_mean_k_composition_is_the_mean_of_the_naive_scores():
    from test_heads_circuits import _model, _naive_composition

    m = _model(position="rope", n_kv_head=2)  # 3 layers x 4 heads
    want = _naive_composition(m)["K"]  # (L, H, L, H), from full (C, C) matrices
    got = mean_k_composition(m)
    assert torch.isnan(got[0]).all()
    for lb in (1, 2):
        for hb in range(4):
            ref = want[:lb, :, lb, hb].mean()  # every head of every earlier layer writes into (lb, hb)
            assert float(got[lb, hb]) == pytest.approx(float(ref), rel=1e-6)
    assert mean_k_composition(_model(n_layer=1)) is None
    rows = head_metrics_snapshot(m)
    assert all("k_composition" not in r for r in rows if r["layer"] == 0)
    assert [r["k_composition"] for r in rows if r["layer"] == 2] == [round(float(v), 4) for v in got[2]]


def test_icl_now_is_late_minus_early_loss_on_the_first_eight_sequences():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=11, block_size=64, n_layer=1, n_head=2, n_embd=16)).train()
    batches = [(torch.randint(0, 11, (3, 64)), torch.randint(0, 11, (3, 64))) for _ in range(4)]
    got = icl_now(m, batches)
    assert m.training  # mode restored
    x = torch.cat([b[0] for b in batches[:3]])  # 3 + 3 + 3 >= 8 rows: the fourth batch is not used
    y = torch.cat([b[1] for b in batches[:3]])
    m.eval()
    with torch.no_grad():
        losses = F.cross_entropy(m(x)[0].transpose(1, 2), y, reduction="none")  # (9, 64)
    early, late = M.icl_positions(64)  # 6 and 62, band +-1
    want = losses[:, late - 1 : late + 2].mean() - losses[:, early - 1 : early + 2].mean()
    assert got == pytest.approx(float(want), abs=1e-5)
    assert icl_now(m, []) is None and icl_now(m, None) is None


def test_heads_rows_and_summary_of_a_tracked_run(tracked):
    run, summary = tracked
    rows = RunDir(run).read_metrics("heads")
    assert [r["step"] for r in rows] == [4, 8, 12]
    for r in rows:
        assert isinstance(r["icl_score"], float)
        assert {h["layer"] for h in r["heads"] if "k_composition" in h} == {1}
    ph = summary["phases"]
    assert set(ph) == {"heads", "icl_score", "val_loss", "sentence"}
    assert (
        ph["sentence"].startswith("no induction head formed")
        and "(3 head snapshots up to step 12)" in ph["sentence"]
    )
    assert RunDir(run).read_summary()["phases"] == ph


def test_no_phases_without_head_metrics(tmp_path, data_dir):
    assert "phases" not in train_small(data_dir, tmp_path / "r", "train.max_iters=4")


# ---------------------------------------------------------------------------------------------- step=
def _heads_cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("heads", overrides=list(overrides))


QUICK = ["ablation.enabled=false", "icl.batch_size=2", "probe.batch_size=2"]


def test_heads_report_at_a_step(tracked, capsys):
    run, _ = tracked
    res = run_report(_heads_cfg(f"run={run}", "step=5", "timeline=false", *QUICK))
    assert "note: step 5 is not kept; using the nearest kept step, 4" in capsys.readouterr().err
    out = run / "heads" / "step_000004"  # never over the run's own report
    assert res["out"] == out and (out / "heads.html").is_file()
    assert _page_data(out / "heads.html")["timeline"] is None  # timeline=false
    doc = json.loads((out / "heads.json").read_text())
    assert doc["info"]["step"] == 4 and doc["info"]["checkpoint"].endswith("snapshots/step_000004.pt")
    assert doc["info"]["phases"] == doc["model_scores"]["phases"]["sentence"]
    assert res["summary"][-1] == "phases: " + doc["info"]["phases"]
    # the numbers are those of the step-4 model (same probe: 2 rows, seed 0), not the final model's
    snap, final = load_run(run, step=4), load_run(run)
    at4 = [r["induction"] for r in head_metrics_snapshot(snap.model, snap.meta, batch_size=2)]
    at12 = [r["induction"] for r in head_metrics_snapshot(final.model, final.meta, batch_size=2)]
    assert [h["induction"] for h in doc["heads"]] == pytest.approx(at4, abs=1e-4)
    assert at4 != pytest.approx(at12, abs=1e-4)


def test_heads_steps_only_prints_the_phases(tracked):
    run, _ = tracked
    res = run_report(_heads_cfg(f"run={run}", "steps.only=true", f"out={run / 'plots'}"))
    assert len(res["summary"]) == 1 and res["summary"][0].startswith("phases: no induction head formed")


def test_sample_at_a_step(tracked):
    run, _ = tracked
    kw = dict(prompt="Hi", max_new_tokens=12, temperature=0, device="cpu")

    def text(**more):
        opts = sampling.parse_options({"run": str(run), **kw, **more})
        out, err = io.StringIO(), io.StringIO()
        sampling.sample(opts, stdout=out, stderr=err)
        return out.getvalue(), err.getvalue()

    at0, _ = text(step=0)
    at12, _ = text(step=12)
    final, _ = text(step="last")
    assert at12 == final and at0 != final  # greedy: the same model gives the same text
    _, err = text(step=3)
    assert "note: step 3 is not kept; using the nearest kept step, 4" in err
    with pytest.raises(UserError, match="step=99 is beyond the snapshots"):
        text(step=99)


def test_bad_step_on_the_command_line_is_one_line(tracked):
    run, _ = tracked
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "heads.py", f"run={run}", "step=400"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: step=400 is beyond the snapshots of {run}: kept steps are 0, 4, 8, 12; step=last loads ckpt.pt"
    )


def test_metrics_over_snapshots_skip_a_damaged_one(tracked, tmp_path, capsys):
    import shutil

    from gptlab.interp.steps import snapshot_checkpoints

    run = tmp_path / "copy"
    shutil.copytree(tracked[0], run)
    RunDir(run).snapshot(8).write_bytes(b"torn")
    rows = snapshot_checkpoints(str(run / "snapshots" / "*.pt"))
    assert [r["step"] for r in rows] == [0, 4, 12]
    assert f"note: skipped {run}/snapshots/step_000008.pt" in capsys.readouterr().err
    snap = load_run(run, step=4)
    assert rows[1]["heads"] == head_metrics_snapshot(snap.model, snap.meta)


# ---------------------------------------------------------------------------------------------- the timeline
def _page_data(path: Path) -> dict:
    text = path.read_text()
    start = text.index('<script id="data" type="application/json">') + len(
        '<script id="data" type="application/json">'
    )
    return json.loads(text[start : text.index("</script>", start)].replace("<\\/", "</"))


def test_pick_steps_keeps_the_page_under_its_budget():
    from gptlab.interp.html import encode_pattern
    from gptlab.interp.timeline import pattern_bytes, pick_steps

    assert pattern_bytes(2, 4, 64) == 8 * len(encode_pattern(torch.rand(64, 64).tril().numpy()))
    kept = [0, 1, 2, 4, 8, 16, 32, 64, 100]
    assert pick_steps(kept, 10, budget=1000) == (kept, None)
    steps, note = pick_steps(kept, 10, budget=40)
    assert steps == [0, 4, 16, 100]  # indices 0, 3, 5, 8 of 9
    assert note.startswith("timeline: 4 of the 9 kept steps drawn")
    steps, note = pick_steps(kept, 10, budget=15)
    assert steps == [] and "none drawn" in note


def test_the_page_timeline_holds_each_snapshot_s_patterns_and_metrics(tracked, tmp_path):
    from gptlab.interp.html import decode_pattern
    from gptlab.interp.tracking import probe_for

    run, _ = tracked
    res = run_report(_heads_cfg(f"run={run}", f"out={tmp_path}", "text=To be or not", *QUICK))
    tl = _page_data(tmp_path / "heads.html")["timeline"]
    assert tl["steps"] == [0, 4, 8, 12] and tl["report_name"] == "best.pt"
    assert tl["report_step"] == load_run(run).step
    ids = torch.tensor(load_run(run).tokenizer.encode("To be or not"))
    for i, step in enumerate(tl["steps"]):
        snap = load_run(run, step=step)
        pats = snap.model.attention_patterns(ids[None])[:, 0]  # (L, H, T, T)
        for j, enc in enumerate(tl["patterns"][i]):
            got = decode_pattern(enc, len(ids))
            assert np.allclose(got, pats[j // 2, j % 2].numpy(), atol=2e-5)
        probe = probe_for(snap.model, snap.meta, 2)
        want = M.induction(snap.model.attention_patterns(probe), probe)
        assert [r["induction"] for r in tl["rows"][i]] == pytest.approx(want.reshape(-1).tolist(), abs=1e-4)
        assert {r["kind"] for r in tl["rows"][i]} <= {k for k, _, _ in M.KIND_RULES} | {"mixed"}
    s = tl["series"]
    assert (
        s["source"] == "metrics.jsonl" and s["steps"] == [4, 8, 12] and len(s["metrics"]["induction"][0]) == 4
    )
    assert (
        s["val_loss"]["steps"] == [4, 8, 12]
        and tl["phases"]["sentence"] == res["report"].model_scores["phases"]["sentence"]
    )


def test_a_damaged_snapshot_is_left_out_of_the_timeline(tracked, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tracked[0], run)
    RunDir(run).snapshot(4).write_bytes(b"torn")
    res = run_report(_heads_cfg(f"run={run}", *QUICK))
    assert _page_data(run / "heads" / "heads.html")["timeline"]["steps"] == [0, 8, 12]
    assert any(n.startswith(f"timeline: skipped {run}/snapshots/step_000004.pt") for n in res["notes"])


@pytest.mark.browser
def test_the_slider_redraws_the_metric_table_for_each_step(tracked, tmp_path, chromium):
    run, _ = tracked
    run_report(_heads_cfg(f"run={run}", f"out={tmp_path}", *QUICK))
    tl = _page_data(tmp_path / "heads.html")["timeline"]
    page = chromium.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "heads.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    assert page.eval_on_selector("body", "b => b.dataset.step") == str(tl["report_step"])
    cols = page.eval_on_selector_all("#metrics thead th", "ths => ths.map(t => t.dataset.c)")
    for i, step in enumerate(tl["steps"]):
        page.eval_on_selector(
            "#tl-slider", f"el => {{ el.value = {i}; el.dispatchEvent(new Event('input')); }}"
        )
        assert page.eval_on_selector("body", "b => b.dataset.step") == str(step)
        assert page.inner_text("#tl-label") == f"the snapshot at step {step}"
        first = page.eval_on_selector_all(
            "#metrics tbody tr:first-child td", "tds => tds.map(t => t.textContent)"
        )
        row = next(r for r in tl["rows"][i] if (r["layer"], r["head"]) == (int(first[0]), int(first[1])))
        assert first[cols.index("induction")] == f"{row['induction']:.3f}"
        assert first[cols.index("kind")] == row["kind"]
        assert page.eval_on_selector("line.now", "l => l.dataset.step") == str(step)
    assert page.eval_on_selector_all("svg", "ss => ss.map(s => s.dataset.metric)") == [
        "induction", "prev_token", "k_composition", "icl_score", "val_loss"
    ]  # fmt: skip
    assert not errors
    ARTIFACTS = ROOT / "test-artifacts"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heads_timeline.png"), full_page=True)
