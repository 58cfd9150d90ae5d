"""heads.py compare=<B> as a call: ``run_compare(cfg)`` (a HeadsConfig, or a mapping) measures run= (A) and B on the same text, matches their
heads and writes compare.csv, compare.md and compare.html (gptlab/interp/compare_report.py).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping

from gptlab.errors import UserError

from .heads_config import HeadsConfig, heads_config
from .run_inputs import (
    check_length,
    choose_text,
    default_out,
    measure,
    open_run,
    report_probe,
    val_dir,
)


def compare_target(cfg: HeadsConfig, run_a):
    """The run ``compare=`` names, checked against ``run_a``: another run or checkpoint, a Hugging Face model
    directory, or ``step:N`` / ``step:best`` / ``step:last`` (another state of the run= run)."""
    from gptlab.interp.compare_report import tokenizer_mismatch
    from gptlab.open_run import is_hf_source, load_run

    target = str(cfg.compare).strip()
    if target.isdigit():
        raise UserError(
            f"compare={target}: pass compare=step:{target} for step {target} of this run, or a run directory"
        )
    device = next(run_a.model.parameters()).device
    try:
        if target.startswith("step:"):
            base = cfg.run if is_hf_source(cfg.run) else run_a.run_dir
            run_b = load_run(base, device=device, step=target[len("step:") :])
        else:
            run_b = load_run(target, device=device)
    except UserError as e:
        msg = str(e)
        if target.startswith("step:"):  # load_run's step= lines, in the option the user wrote
            msg = re.sub(r"(?<![\w.])step=", "compare=step:", msg)
        raise UserError(msg if msg.startswith("compare=") else f"compare={target}: {msg}") from None
    for note in run_b.notes:
        print(f"note: compare={target}: {note}", file=sys.stderr)
    why = tokenizer_mismatch(run_a.tokenizer, run_a.meta, run_b.tokenizer, run_b.meta)
    if why:
        raise UserError(
            f"compare={target} tokenizes text differently from run= ({why}), so the same text would be other "
            "tokens; compare two models of the same tokenizer"
        )
    return run_b, target


def _side_info(run) -> dict:
    mc = run.model.config
    return {
        "checkpoint": str(run.ckpt_path),
        "step": run.step,
        "layers x heads": f"{mc.n_layer} x {mc.n_head}",
        "kv heads": mc.kv_heads,
        "position": mc.position,
        "mlp": mc.mlp,
    }


def match_method(cfg: HeadsConfig, target: str, same_shape: bool) -> str:
    method = cfg.compare_match
    if method == "auto":
        return "position" if target.startswith("step:") and same_shape else "similarity"
    if method == "position" and not same_shape:
        raise UserError(
            "compare_match=position pairs head l,h with head l,h, so it needs two models of the same shape; "
            "use compare_match=similarity"
        )
    return method


def run_compare(cfg: HeadsConfig | Mapping) -> dict:
    """``compare=<B>``: run= (A) and B measured on the same text, their heads matched; compare.csv, compare.md,
    compare.html (gptlab/interp/compare_report.py, docs/heads.md "Comparing two models or two steps")."""
    from gptlab.interp.compare_report import Side, write_compare
    from gptlab.interp.pairing import head_rows, layer_groups, match_heads, similarity_matrix
    from gptlab.interp.tracking import probe_for
    from gptlab.rundir.outdir import check_out_dir

    t_start = time.perf_counter()
    cfg = heads_config(cfg)
    if cfg.steps.only:
        raise UserError("steps.only=true plots one run over training; leave it out with compare=")
    run_a = open_run(cfg)
    ma = run_a.model
    for name, v, n in (("layer", cfg.layer, ma.config.n_layer), ("head", cfg.head, ma.config.n_head)):
        if not 0 <= v < n:
            raise UserError(f"{name}={v} is out of range: run= has {n} {name}s (0..{n - 1})")
    run_b, target = compare_target(cfg, run_a)
    mb = run_b.model
    same_shape = (ma.config.n_layer, ma.config.n_head) == (mb.config.n_layer, mb.config.n_head)
    method = match_method(cfg, target, same_shape)
    tag = (
        f"step_{run_b.step:06d}"
        if target.startswith("step:")
        else "".join(c if c.isalnum() or c in "-_." else "_" for c in run_b.run_dir.name)
        + (f"_step_{run_b.step:06d}" if run_b.snapshot else "")
    )
    default = default_out(run_a)
    if run_a.snapshot or cfg.step not in (None, "best"):
        default = default / f"step_{run_a.step:06d}"
    out = check_out_dir(
        cfg.out or default / f"compare_{tag}",
        "heads",
        "out",
        sources=[run_a.run_dir, run_b.run_dir],
        own=not cfg.out,
    )
    probe_a, probe_b = report_probe(run_a, cfg), report_probe(run_b, cfg)
    wanted = [
        *(["the val loss and the ICL score"] if cfg.icl.batches else []),
        *(["the ablations"] if cfg.ablation.enabled and cfg.ablation.batches else []),
    ]
    no_text = cfg.text is None and cfg.text_file is None
    skipping = ", ".join(wanted + (["the val text (repeated random tokens instead)"] if no_text else []))
    ddir = val_dir(run_a, cfg, skipping) if skipping else None  # A's data, for both models
    ids, source = choose_text(run_a, cfg, ddir, probe_a)
    check_length(len(ids), ma)
    try:
        check_length(len(ids), mb)
    except UserError as e:
        raise UserError(f"compare={target}: {e}") from None
    rep_a, _ = measure(run_a, cfg, ids, ddir, probe_a)
    rep_b, _ = measure(run_b, cfg, ids, ddir, probe_b)

    # the heads are matched on the text and on one probe both models can read (the smaller vocabulary, the
    # shorter context)
    small = min((run_a, run_b), key=lambda r: r.model.config.vocab_size)
    seq = min(m.max_seq_len or m.config.block_size for m in (ma, mb))
    mprobe = probe_for(
        small.model,
        small.meta,
        cfg.probe.batch_size,
        seq_len=min(seq, small.model.config.block_size),
        reps=cfg.probe.reps,
        seed=cfg.probe.seed,
        device=probe_a.device,
    )
    inputs = [
        [head_rows(r.patterns), head_rows(m.attention_patterns(mprobe).float().cpu().numpy())]
        for r, m in ((rep_a, ma), (rep_b, mb))
    ]
    groups = layer_groups(ma.config.n_layer, mb.config.n_layer)
    matching = match_heads(similarity_matrix(inputs[0], inputs[1], groups), groups, method)

    def name(run, label):
        return f"{run.run_dir.name} step {run.step}" + (f" ({label})" if label else "")

    a = Side(name(run_a, ""), _side_info(run_a), rep_a)
    b = Side(name(run_b, target if target.startswith("step:") else ""), _side_info(run_b), rep_b)
    text_info = f"{len(ids)} tokens ({source})"
    files, summary = write_compare(
        a,
        b,
        matching,
        out,
        title=f"heads: {a.name} (A) vs {b.name} (B)",
        text_info=text_info,
        layer=cfg.layer,
        head=cfg.head,
    )
    notes = [f"A: {n}" for n in rep_a.notes if n not in rep_b.notes] + [
        f"B: {n}" for n in rep_b.notes if n not in rep_a.notes
    ]
    notes += [n for n in rep_a.notes if n in rep_b.notes]
    return {
        "files": files,
        "summary": summary,
        "notes": notes,
        "out": out,
        "matching": matching,
        "reports": (rep_a, rep_b),
        "timings": {"total_s": time.perf_counter() - t_start},
    }
