"""heads.py's report as a call: ``run_report(cfg)`` (a HeadsConfig, or a mapping of configs/heads.yaml) measures every head of a run and writes
heads.csv, heads.json, the PNGs and heads.html (gptlab/interp/head_report.py), with the timeline over the run's snapshots
and the plots over steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

from gptlab.errors import UserError

from .heads_config import HeadsConfig, heads_config
from .run_inputs import (
    check_length,
    choose_text,
    data_hint,
    default_out,
    measure,
    open_run,
    report_probe,
    val_dir,
)


def _steps_plots(run_dir: Path, cfg: HeadsConfig, out: Path, device) -> list[Path]:
    from gptlab.interp import plots
    from gptlab.interp.steps import read_head_rows, snapshot_checkpoints, stack_over_steps

    written = []
    sources = []
    rows = read_head_rows(run_dir / "metrics.jsonl")
    if rows:
        sources.append(("steps", rows))
    if cfg.steps.checkpoints:
        sources.append(("checkpoints", snapshot_checkpoints(cfg.steps.checkpoints, device)))
    for name, rows in sources:
        if len(rows) < 2:
            print(
                f"note: only {len(rows)} head snapshot(s) from {name}; need 2 to plot over steps",
                file=sys.stderr,
            )
            continue
        for metric in cfg.steps.metrics:
            steps, vals = stack_over_steps(rows, metric)
            if not (vals == vals).any():
                print(f"note: no {metric!r} values in the head snapshots", file=sys.stderr)
                continue
            out.mkdir(parents=True, exist_ok=True)
            written.append(
                plots.metric_over_steps(steps, vals, metric, out / f"heads_over_{name}_{metric}.png")
            )
    return written


def _phases(run_dir: Path) -> dict | None:
    """The run's phase changes from its metrics.jsonl head rows (gptlab/interp/phases.py), or None."""
    from gptlab.interp.phases import training_phases
    from gptlab.rundir.layout import RunDir

    return training_phases(RunDir(run_dir).read_metrics())


def _timeline(run, cfg: HeadsConfig, text_ids, probe, metric_x, phases) -> tuple[dict | None, list[str]]:
    """The page's timeline (gptlab/interp/timeline.py) over the run's kept snapshots, and notes; None without
    snapshots or head rows, or with timeline=false."""
    from gptlab.interp.timeline import measure_steps, pattern_bytes, pick_steps, series
    from gptlab.open_run import load_run
    from gptlab.rundir.layout import RunDir

    rd = RunDir(run.run_dir)
    kept, rows = rd.snapshot_steps(), rd.read_metrics()
    if not cfg.timeline or not (kept or any(r.get("kind") == "heads" for r in rows)):
        return None, []
    mc, device = run.model.config, next(run.model.parameters()).device
    steps, note = pick_steps(kept, pattern_bytes(mc.n_layer, mc.n_head, len(text_ids)))
    notes = [note] if note else []

    def models():
        for s in steps:
            try:
                yield s, load_run(rd.snapshot(s), device=device).model
            except UserError as e:  # a damaged snapshot: the others still make the timeline
                notes.append(f"timeline: skipped {rd.snapshot(s)} ({e})")

    tl = measure_steps(models(), text_ids, probe, metric_x)
    tl.update(
        series=series(rows, tl, mc.n_layer, mc.n_head),
        phases=phases,
        report_step=run.step,
        report_name=run.ckpt_path.name,
    )
    return tl, notes


def run_report(cfg: HeadsConfig | Mapping) -> dict:
    """Run the whole report for cfg; returns the files written and the timings."""
    import torch

    from gptlab.interp.head_report import summary_lines, write_report
    from gptlab.rundir.outdir import check_out_dir

    t_start = time.perf_counter()
    cfg = heads_config(cfg)
    run = open_run(cfg)
    device = next(run.model.parameters()).device
    model = run.model
    mc = model.config
    L, H = mc.n_layer, mc.n_head
    for name, v, n in (("layer", cfg.layer, L), ("head", cfg.head, H)):
        if not 0 <= v < n:
            raise UserError(f"{name}={v} is out of range: this model has {n} {name}s (0..{n - 1})")
    default = default_out(run)
    if run.snapshot or cfg.step not in (None, "best"):
        default = default / f"step_{run.step:06d}"  # a snapshot's report never replaces the run's own
    out = check_out_dir(
        cfg.out or default,
        "heads",
        "out",
        sources=[run.run_dir],
        own=not cfg.out,
    )
    phases = _phases(run.run_dir)
    phase_lines = [f"phases: {phases['sentence']}"] if phases else []
    if cfg.steps.only:
        files = _steps_plots(run.run_dir, cfg, out, device)
        if not files:
            raise UserError(
                "no head metrics over steps to plot: train with train.head_metrics_interval=N "
                "or pass steps.checkpoints=<glob>"
            )
        return {"files": files, "summary": phase_lines, "timings": {}}
    probe = report_probe(run, cfg)
    wanted = [
        *(["the val loss and the ICL score"] if cfg.icl.batches else []),
        *(["the ablations"] if cfg.ablation.enabled and cfg.ablation.batches else []),
    ]
    no_text = cfg.text is None and cfg.text_file is None
    skipping = ", ".join(
        wanted + (["the val text (the report looks at repeated random tokens)"] if no_text else [])
    )
    ddir = val_dir(run, cfg, skipping) if skipping else None
    ids, source = choose_text(run, cfg, ddir, probe)
    long_note = check_length(len(ids), model)
    rep, metric_x = measure(run, cfg, ids, ddir, probe)
    text_ids = torch.tensor(ids, dtype=torch.long, device=device)
    if phases:
        rep.model_scores["phases"] = phases
    info = {
        "checkpoint": str(run.ckpt_path),
        "step": run.step,
        "layers x heads": f"{L} x {H}",
        "kv heads": mc.kv_heads,
        "position": mc.position,
        "mlp": mc.mlp,
        "text": f"{len(ids)} tokens ({source})",
    }
    if phases:
        info["phases"] = phases["sentence"]
    title = f"heads of {run.run_dir.name}"
    t0 = time.perf_counter()
    timeline, tl_notes = _timeline(run, cfg, text_ids, probe, metric_x, phases)
    rep.notes.extend(tl_notes)
    if long_note:
        rep.notes.append(long_note)
    rep.timings["timeline_s"] = time.perf_counter() - t0
    files = write_report(rep, out, title=title, info=info, layer=cfg.layer, head=cfg.head, timeline=timeline)
    files.update({p.stem: p for p in _steps_plots(run.run_dir, cfg, out, device)})
    rep.timings["total_s"] = time.perf_counter() - t_start
    return {
        "files": files,
        "summary": summary_lines(rep, cfg.top) + phase_lines,
        "timings": rep.timings,
        "notes": rep.notes
        + ([f"to get {' and '.join(wanted)}: {data_hint(run)}"] if wanted and not ddir else []),
        "out": out,
        "report": rep,
    }
