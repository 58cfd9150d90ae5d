"""Inspect the learned attention heads of a run: `python heads.py run=<run dir or .pt> [text=... | text_file=... |
split=val] [out=...]` (config: configs/heads.yaml; metric definitions: docs/heads.md).

Writes into `<run>/heads/` (or `out=`; for a Hugging Face model folder runs/hf/<its name>/heads/): heads.csv,
heads.json, composition.csv, heatmap_<metric>.png, patterns_grid.png, pattern_L<l>H<h>.png, composition.png,
logit_lens.png, heads.html, and heads_over_steps_<metric>.png when the run logged head metrics; prints the top
heads of each kind.

`serve=true` instead starts the live viewer (interp/serve.py): a local page where any typed text is run
through the model (`port=8765 host=127.0.0.1`).

`compare=<B>` (another run, an HF directory of the same tokenizer, or `step:N` of this run) measures both models
on the same text, matches their heads and writes compare.csv, compare.md and compare.html instead (with
`serve=true`: both models side by side in the live viewer).
"""

from __future__ import annotations

import re
import signal
import sys

from gptlab_errors import quiet_ctrl_c_while_starting

if __name__ == "__main__":  # Ctrl-C while the libraries below load: one line, not an import traceback
    quiet_ctrl_c_while_starting()
    from cli import exit_after_help

    exit_after_help("heads", sys.argv[1:], __doc__)  # --help at once, before the slow imports

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cli import prepare_argv, read_text_file
from gptlab_errors import UserError, exit_on_user_error

PAGE_MAX_TOKENS = 1024  # heads.html stores n_layer * n_head * T^2 / 2 weights: keep it openable


def _data_hint(run) -> str:
    """How to get val data for this run: the data config to prepare, and the data_dir= to pass where needed."""
    from data import DataConfig

    data_cfg = (run.config or {}).get("data")
    name = data_cfg.get("name") if isinstance(data_cfg, dict) else None
    if name:  # our own run: preparing its data config is enough, heads.py finds the folder itself
        return f"prepare it with `python -m data data={name}`, or pass data_dir=<prepared folder>"
    if (run.meta or {}).get("tokenizer") == "gpt2":  # a pretrained GPT-2 (or a run without a data config)
        d = DataConfig(name="shakespeare_gpt2").resolved_out_dir()
        return (
            f"prepare data with its tokenizer (`python -m data data=shakespeare_gpt2`) and pass data_dir={d}"
        )
    return "prepare data with this model's tokenizer (docs/data.md) and pass data_dir=<prepared folder>"


def _val_dir(run, cfg, skipping: str | None = None) -> Path | None:
    """The prepared data folder holding the run's val.bin, or None (saying on stderr what is skipped, if
    ``skipping`` names it, and how to get it).

    ``data_dir=`` names one; otherwise the run's own prepared folder is used read-only, and only when it holds
    the data the run was trained on. Nothing is prepared or written, and no file the checkpoint names is read
    unless it is that verified folder.
    """
    from data import find_prepared, load_meta

    if cfg.data_dir:
        d = Path(cfg.data_dir).expanduser()
        if not (d / "val.bin").is_file():
            raise UserError(
                f"data_dir={d} has no val.bin; pass a prepared data folder (data/prepared/<name>)"
            )
        load_meta(d)
        return d
    data_cfg = (run.config or {}).get("data")
    found = find_prepared(data_cfg, run.meta) if isinstance(data_cfg, dict) else None
    if found is None and skipping:
        why = (
            "the run's prepared data is not here (or is not the data it trained on)"
            if isinstance(data_cfg, dict)
            else "this model names no prepared data of its own"
        )
        print(f"note: {why}; skipping {skipping}: {_data_hint(run)}", file=sys.stderr)
    return found


def _check_ids(ids, run, path: Path) -> None:
    """Token ids read from a data folder must fit this model (data/'s check, with the fix for heads.py)."""
    from data import check_token_ids

    vocab = min(run.model.config.vocab_size, run.tokenizer.vocab_size)
    check_token_ids(
        ids,
        vocab,
        path,
        fix=f"this run's tokenizer ({run.tokenizer.name}) has {vocab} ids; pass a data_dir prepared with it",
    )


def _batches(
    run, ddir: Path | None, split: str, block: int, batch_size: int, n: int, seed: int, device="cpu"
):
    if ddir is None or n <= 0:
        return None
    from data import BatchLoader

    loader = BatchLoader(
        ddir / f"{split}.bin", block_size=block, batch_size=batch_size, seed=seed, device=device
    )
    batches = loader.fixed_batches(n)
    for x, y in batches:
        _check_ids([int(x.max()), int(y.max())], run, loader.path)
    return batches


def _text_ids(run, cfg, ddir: Path | None, probe) -> tuple[list[int], str]:
    """The token ids to draw, and where they came from."""
    import numpy as np

    if cfg.max_tokens is not None and (not isinstance(cfg.max_tokens, int) or cfg.max_tokens < 2):
        raise UserError(f"max_tokens={cfg.max_tokens!r} must be an integer >= 2 (a pattern needs two tokens)")
    given = [k for k in ("text", "text_file", "split") if cfg.get(k) is not None]
    if len(given) > 1:
        raise UserError(f"pass only one of text=, text_file=, split= (got {', '.join(given)})")
    block = run.model.config.block_size
    if cfg.text is not None or cfg.text_file is not None:
        if cfg.text_file is not None:
            text, source = (
                read_text_file(str(cfg.text_file), "text_file"),
                f"file {Path(str(cfg.text_file)).name}",
            )
        else:
            text, source = str(cfg.text), "text"
        ids = run.tokenizer.encode(text) if text else []
        if not ids:
            raise UserError(f'the {source} is empty; pass text="..." with at least two tokens')
        if len(ids) < 2:
            raise UserError(f"the text encodes to {len(ids)} token(s); pass at least two tokens")
        if cfg.max_tokens:
            ids = ids[: int(cfg.max_tokens)]
        return ids, source
    split = cfg.split or ("val" if ddir is not None else None)
    if split is None:
        return probe[0].tolist(), "repeated random tokens (no prepared data found)"
    if split not in ("val", "train"):
        raise UserError(f"split={split!r} is not val or train")
    if ddir is None:
        raise UserError(
            f"split={split} needs the run's prepared data; pass data_dir=<prepared folder> or text=..."
        )
    from data import load_meta

    meta = load_meta(ddir)
    n = int(cfg.max_tokens or min(block, 256))
    arr = np.memmap(ddir / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")[:n]
    _check_ids(arr, run, ddir / f"{split}.bin")
    return [int(t) for t in arr], f"the first {n} tokens of {split}.bin"


def _check_length(n: int, model) -> None:
    lim = model.max_seq_len
    if lim is not None and n > lim:
        raise UserError(
            f"the text has {n} tokens but this model ({model.config.position} positions) takes at most {lim}; "
            f"shorten it or pass max_tokens={lim}"
        )
    if n > PAGE_MAX_TOKENS:
        raise UserError(
            f"the text has {n} tokens; heads.html draws at most {PAGE_MAX_TOKENS}: pass max_tokens="
        )


def _steps_plots(run_dir: Path, cfg, out: Path, device) -> list[Path]:
    from interp import plots
    from interp.steps import read_head_rows, snapshot_checkpoints, stack_over_steps

    written = []
    sources = []
    rows = read_head_rows(run_dir / "metrics.jsonl")
    if rows:
        sources.append(("steps", rows))
    if cfg.steps.checkpoints:
        sources.append(("checkpoints", snapshot_checkpoints(str(cfg.steps.checkpoints), device)))
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


# the report's counts: (config key, smallest value, what the smallest means or None); null only where marked
COUNTS = (
    ("probe.batch_size", 1, None),
    ("probe.reps", 2, None),
    ("metrics.batch_size", 1, None),
    ("icl.batches", 0, "0 = no ICL score"),
    ("icl.batch_size", 1, None),
    ("ablation.batches", 0, "0 = no ablations"),
    ("ablation.batch_size", 1, None),
    ("ablation.seq_len", 2, "or null = block_size"),
    ("top", 1, None),
)


def _check_count(cfg: DictConfig, key: str, low: int, hint: str | None) -> None:
    from omegaconf import OmegaConf

    v = OmegaConf.select(cfg, key)
    if v is None and hint and "null" in hint:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        extra = f" ({hint})" if hint else ""
        raise UserError(f"{key} must be an integer >= {low}{extra}, got {v!r}")


def _load(cfg: DictConfig):
    """The run named by ``run=`` on ``device=``, with ``threads`` applied (the report and the server)."""
    from rundir.load import load_run
    from runtime.device import pick_device, set_threads

    if not cfg.run:
        raise UserError("pass run=<run directory or checkpoint .pt>")
    _check_count(cfg, "threads", 1, "or null = automatic")
    device = pick_device(str(cfg.device))
    run = load_run(cfg.run, device=device, step=cfg.get("step"))
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    # the largest forward the report runs: a batch of block_size-long val rows (forward = a third of training)
    block = run.model.config.block_size
    set_threads(
        cfg.get("threads"), run.model.flops_per_token(block) / 3 * block * int(cfg.icl.batch_size), device
    )
    return run


def _phases(run_dir: Path) -> dict | None:
    """The run's phase changes from its metrics.jsonl head rows (interp/phases.py), or None."""
    from interp.phases import training_phases
    from rundir.layout import RunDir

    return training_phases(RunDir(run_dir).read_metrics())


def _timeline(run, cfg, text_ids, probe, metric_x, phases) -> tuple[dict | None, list[str]]:
    """The page's timeline (interp/timeline.py) over the run's kept snapshots, and notes; None without
    snapshots or head rows, or with timeline=false."""
    from interp.timeline import measure_steps, pattern_bytes, pick_steps, series
    from rundir.layout import RunDir
    from rundir.load import load_run

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


def _default_out(run) -> Path:
    """<run>/heads; for a Hugging Face model folder runs/hf/<folder name>/heads, never inside the model's folder
    (a hub id already has its run_dir there)."""
    hf_dir = (run.config.get("hf") or {}).get("dir")
    if hf_dir is None or Path(hf_dir) != run.run_dir:
        return run.run_dir / "heads"
    from interop.hf import HF_RUNS

    out = HF_RUNS / run.run_dir.name / "heads"
    print(f"note: {run.run_dir} is a Hugging Face model folder: the report goes to {out} (out= to choose)")
    return out


def _probe(run, cfg):
    """The repeated-random-token probe of the report (interp/tracking.py), for ``run``'s model."""
    import torch

    from interp.tracking import probe_for

    torch.manual_seed(0)
    model = run.model
    return probe_for(
        model,
        run.meta,
        int(cfg.probe.batch_size),
        reps=int(cfg.probe.reps),
        seed=int(cfg.probe.seed),
        device=next(model.parameters()).device,
    )


def _measure(run, cfg, ids: list[int], ddir: Path | None, probe):
    """Every head of ``run``'s model measured on the tokens ``ids`` (interp.report.analyse), the val batches
    from ``ddir``: the report, and the val rows its content-independent metrics used (or None)."""
    import torch

    from interp.html import token_texts
    from interp.report import analyse

    torch.manual_seed(0)
    model = run.model
    device = next(model.parameters()).device
    block = model.config.block_size
    text_ids = torch.tensor(ids, dtype=torch.long, device=device)
    eval_b = _batches(
        run, ddir, "val", block, int(cfg.icl.batch_size), int(cfg.icl.batches), seed=1, device=device
    )
    metric_x = eval_b[0][0][: int(cfg.metrics.batch_size)] if eval_b else None
    abl_b = None
    if cfg.ablation.enabled:
        abl_T = min(block, int(cfg.ablation.seq_len or block))
        abl_b = _batches(
            run,
            ddir,
            "val",
            abl_T,
            int(cfg.ablation.batch_size),
            int(cfg.ablation.batches),
            seed=2,
            device=device,
        )
    rep = analyse(model, text_ids, token_texts(run.tokenizer, ids), probe, metric_x, eval_b, abl_b)
    return rep, metric_x


def report(cfg: DictConfig) -> dict:
    """Run the whole report for cfg; returns the files written and the timings."""
    import torch

    from interp.report import summary_lines, write_report
    from rundir.outdir import check_out_dir

    t_start = time.perf_counter()
    for key, low, hint in COUNTS:
        _check_count(cfg, key, low, hint)
    run = _load(cfg)
    device = next(run.model.parameters()).device
    model = run.model
    mc = model.config
    L, H = mc.n_layer, mc.n_head
    for name, v, n in (("layer", cfg.layer, L), ("head", cfg.head, H)):
        if not isinstance(v, int) or not 0 <= v < n:
            raise UserError(f"{name}={v} is out of range: this model has {n} {name}s (0..{n - 1})")
    default = _default_out(run)
    if run.snapshot or cfg.get("step") not in (None, "best"):
        default = default / f"step_{run.step:06d}"  # a snapshot's report never replaces the run's own
    out = check_out_dir(
        str(cfg.out) if cfg.out else default,
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
    probe = _probe(run, cfg)
    wanted = [
        *(["the val loss and the ICL score"] if cfg.icl.batches else []),
        *(["the ablations"] if cfg.ablation.enabled and cfg.ablation.batches else []),
    ]
    no_text = cfg.text is None and cfg.text_file is None
    skipping = ", ".join(
        wanted + (["the val text (the report looks at repeated random tokens)"] if no_text else [])
    )
    ddir = _val_dir(run, cfg, skipping) if skipping else None
    ids, source = _text_ids(run, cfg, ddir, probe)
    _check_length(len(ids), model)
    rep, metric_x = _measure(run, cfg, ids, ddir, probe)
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
    rep.timings["timeline_s"] = time.perf_counter() - t0
    files = write_report(
        rep, out, title=title, info=info, layer=int(cfg.layer), head=int(cfg.head), timeline=timeline
    )
    files.update({p.stem: p for p in _steps_plots(run.run_dir, cfg, out, device)})
    rep.timings["total_s"] = time.perf_counter() - t_start
    return {
        "files": files,
        "summary": summary_lines(rep, int(cfg.top)) + phase_lines,
        "timings": rep.timings,
        "notes": rep.notes
        + ([f"to get {' and '.join(wanted)}: {_data_hint(run)}"] if wanted and not ddir else []),
        "out": out,
        "report": rep,
    }


def _sample_text(run, ddir: Path | None, n: int = 64) -> str | None:
    """The text the live page opens with: the first ``n`` tokens of the run's val.bin (None without it)."""
    if ddir is None:
        return None
    import numpy as np

    from data import load_meta

    arr = np.memmap(ddir / "val.bin", dtype=np.dtype(load_meta(ddir)["dtype"]), mode="r")
    ids = [int(t) for t in arr[: min(n, run.model.config.block_size)]]
    _check_ids(ids, run, ddir / "val.bin")
    return run.tokenizer.decode(ids) or None


def _compare_target(cfg, run_a):
    """The run ``compare=`` names, checked against ``run_a``: another run or checkpoint, a Hugging Face model
    directory, or ``step:N`` / ``step:best`` / ``step:last`` (another state of the run= run)."""
    from interp.compare_report import tokenizer_mismatch
    from rundir.load import is_hf_source, load_run

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


def _match_method(cfg, target: str, same_shape: bool) -> str:
    method = str(cfg.compare_match)
    if method == "auto":
        return "position" if target.startswith("step:") and same_shape else "similarity"
    if method not in ("similarity", "position"):
        raise UserError(f"compare_match={method!r} must be auto, similarity or position")
    if method == "position" and not same_shape:
        raise UserError(
            "compare_match=position pairs head l,h with head l,h, so it needs two models of the same shape; "
            "use compare_match=similarity"
        )
    return method


def compare(cfg: DictConfig) -> dict:
    """``compare=<B>``: run= (A) and B measured on the same text, their heads matched; compare.csv, compare.md,
    compare.html (interp/compare_report.py, docs/heads.md "Comparing two models or two steps")."""
    from interp.compare_report import Side, write_compare
    from interp.pairing import head_rows, layer_groups, match_heads, similarity_matrix
    from interp.tracking import probe_for
    from rundir.outdir import check_out_dir

    t_start = time.perf_counter()
    if cfg.steps.only:
        raise UserError("steps.only=true plots one run over training; leave it out with compare=")
    for key, low, hint in COUNTS:
        _check_count(cfg, key, low, hint)
    run_a = _load(cfg)
    ma = run_a.model
    for name, v, n in (("layer", cfg.layer, ma.config.n_layer), ("head", cfg.head, ma.config.n_head)):
        if not isinstance(v, int) or not 0 <= v < n:
            raise UserError(f"{name}={v} is out of range: run= has {n} {name}s (0..{n - 1})")
    run_b, target = _compare_target(cfg, run_a)
    mb = run_b.model
    same_shape = (ma.config.n_layer, ma.config.n_head) == (mb.config.n_layer, mb.config.n_head)
    method = _match_method(cfg, target, same_shape)
    tag = (
        f"step_{run_b.step:06d}"
        if target.startswith("step:")
        else "".join(c if c.isalnum() or c in "-_." else "_" for c in run_b.run_dir.name)
        + (f"_step_{run_b.step:06d}" if run_b.snapshot else "")
    )
    default = _default_out(run_a)
    if run_a.snapshot or cfg.get("step") not in (None, "best"):
        default = default / f"step_{run_a.step:06d}"
    out = check_out_dir(
        str(cfg.out) if cfg.out else default / f"compare_{tag}",
        "heads",
        "out",
        sources=[run_a.run_dir, run_b.run_dir],
        own=not cfg.out,
    )
    probe_a, probe_b = _probe(run_a, cfg), _probe(run_b, cfg)
    wanted = [
        *(["the val loss and the ICL score"] if cfg.icl.batches else []),
        *(["the ablations"] if cfg.ablation.enabled and cfg.ablation.batches else []),
    ]
    no_text = cfg.text is None and cfg.text_file is None
    skipping = ", ".join(wanted + (["the val text (repeated random tokens instead)"] if no_text else []))
    ddir = _val_dir(run_a, cfg, skipping) if skipping else None  # A's data, for both models
    ids, source = _text_ids(run_a, cfg, ddir, probe_a)
    _check_length(len(ids), ma)
    try:
        _check_length(len(ids), mb)
    except UserError as e:
        raise UserError(f"compare={target}: {e}") from None
    rep_a, _ = _measure(run_a, cfg, ids, ddir, probe_a)
    rep_b, _ = _measure(run_b, cfg, ids, ddir, probe_b)

    # the heads are matched on the text and on one probe both models can read (the smaller vocabulary, the
    # shorter context)
    small = min((run_a, run_b), key=lambda r: r.model.config.vocab_size)
    seq = min(m.max_seq_len or m.config.block_size for m in (ma, mb))
    mprobe = probe_for(
        small.model,
        small.meta,
        int(cfg.probe.batch_size),
        seq_len=min(seq, small.model.config.block_size),
        reps=int(cfg.probe.reps),
        seed=int(cfg.probe.seed),
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
        layer=int(cfg.layer),
        head=int(cfg.head),
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


def start_server(cfg: DictConfig):
    """The live viewer's server for cfg (serve=true), bound and ready; `serve_forever()` runs it."""
    import errno

    from interp.live import LiveModel
    from interp.serve import HeadServer

    port, host = cfg.port, cfg.host
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise UserError(f"port={port!r} must be an integer from 0 to 65535 (0 = any free port)")
    if host is None or not str(host).strip():  # the socket library reads "" as every address of this machine
        raise UserError(
            "host= is empty; pass host=127.0.0.1 (this machine only), or an address to be reached from the "
            "network (host=0.0.0.0 for all of this machine's addresses)"
        )
    host = str(host)
    unused = [k for k in ("text", "text_file", "split") if cfg.get(k) is not None]
    if unused:
        print(
            f"note: {', '.join(unused)} is not used with serve=true: type the text on the page",
            file=sys.stderr,
        )
    run = _load(cfg)
    info = {"checkpoint": run.ckpt_path.name, "step": run.step}
    live = LiveModel(
        run.model,
        run.tokenizer,
        title=f"heads of {run.run_dir.name}",
        info=info,
        sample_text=_sample_text(run, _val_dir(run, cfg)),
    )
    both = None
    if cfg.compare is not None:  # a second model beside it: /api/compare and the side-by-side page
        from interp.live_compare import LiveCompare

        run_b, target = _compare_target(cfg, run)
        same = (run.model.config.n_layer, run.model.config.n_head) == (
            run_b.model.config.n_layer,
            run_b.model.config.n_head,
        )
        live.title = f"{run.run_dir.name} step {run.step}"
        info_b = {"checkpoint": run_b.ckpt_path.name, "step": run_b.step}
        live_b = LiveModel(
            run_b.model, run_b.tokenizer, title=f"{run_b.run_dir.name} step {run_b.step}", info=info_b
        )
        both = LiveCompare(live, live_b, _match_method(cfg, target, same))
    try:
        return HeadServer(live, host, port, compare=both)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use; pass port=<another> (port=0 picks a free one)") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(
                f"port {port} needs privileges on this machine; pass port=8765 or another above 1023"
            ) from None
        raise UserError(
            f"cannot listen on host={host} port={port} ({e.strerror or e}); pass host=127.0.0.1"
        ) from None


def serve(cfg: DictConfig) -> None:
    """Run the live viewer until Ctrl-C."""
    server = start_server(cfg)
    exposed = (
        ""
        if server.loopback_only
        else " (reachable from the network: anyone who can reach it can run the model)"
    )
    print(f"live head viewer: open {server.url}{exposed}; Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()


@hydra.main(version_base="1.3", config_path="configs", config_name="heads")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    try:
        _main(cfg)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


def _main(cfg: DictConfig) -> None:
    if cfg.serve:
        return serve(cfg)
    if cfg.compare is not None:
        res = compare(cfg)
        for line in res["summary"] + [f"note: {n}" for n in res["notes"]]:
            print(line)
        print(
            f"wrote {len(res['files'])} files to {res['out']} in {res['timings']['total_s']:.1f} s; "
            f"open {res['files']['html']}"
        )
        return None
    res = report(cfg)
    for line in res["summary"]:
        print(line)
    for note in res.get("notes", []):
        print(f"note: {note}")
    if "out" in res:
        t = res["timings"]
        print(
            f"wrote {len(res['files'])} files to {res['out']} in {t['total_s']:.1f} s "
            f"(patterns {t['patterns_s']:.1f} s, ablations {t['ablation_s']:.1f} s, circuits {t['circuits_s']:.1f} s, "
            f"PNGs {t['png_s']:.1f} s, timeline {t['timeline_s']:.1f} s, "
            f"page {t['html_s']:.1f} s); open {res['out'] / 'heads.html'}"
        )
    else:
        for f in res["files"]:
            print(f"wrote {f}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt
    sys.argv[1:] = exit_on_user_error(prepare_argv)("heads", sys.argv[1:], __doc__)
    main()
