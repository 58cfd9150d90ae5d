"""What heads.py's report reads, checked: the run (on its device, threads set), its val data, the text, the
probe, the val batches; every head measured on them (``measure``). Shared by run_report, run_compare and
run_serve; they take the typed config (gptlab/interp/heads_config.py), and a bad input is a one-line
UserError.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gptlab.cli import read_text_file
from gptlab.errors import UserError

from .heads_config import HeadsConfig

PAGE_MAX_TOKENS = 2048  # the longest text heads.html draws (it holds n_layer * n_head * T^2 / 2 weights)
PAGE_MAX_BYTES = 200_000_000  # and its patterns never take more than this (a browser tab must open it)


def data_hint(run) -> str:
    """How to get val data for this run: the data config to prepare, and the data_dir= to pass where needed."""
    from gptlab.data import DataConfig

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


def val_dir(run, cfg: HeadsConfig, skipping: str | None = None) -> Path | None:
    """The prepared data folder holding the run's val.bin, or None (saying on stderr what is skipped, if
    ``skipping`` names it, and how to get it).

    ``data_dir=`` names one; otherwise the run's own prepared folder is used read-only, and only when it holds
    the data the run was trained on. Nothing is prepared or written, and no file the checkpoint names is read
    unless it is that verified folder.
    """
    from gptlab.data import find_prepared, load_meta

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
        print(f"note: {why}; skipping {skipping}: {data_hint(run)}", file=sys.stderr)
    return found


def check_ids(ids, run, path: Path) -> None:
    """Token ids read from a data folder must fit this model (data/'s check, with the fix for heads.py)."""
    from gptlab.data import check_token_ids

    vocab = min(run.model.config.vocab_size, run.tokenizer.vocab_size)
    check_token_ids(
        ids,
        vocab,
        path,
        fix=f"this run's tokenizer ({run.tokenizer.name}) has {vocab} ids; pass a data_dir prepared with it",
    )


def data_batches(
    run, ddir: Path | None, split: str, block: int, batch_size: int, n: int, seed: int, device="cpu"
):
    if ddir is None or n <= 0:
        return None
    from gptlab.data import BatchLoader

    loader = BatchLoader(
        ddir / f"{split}.bin", block_size=block, batch_size=batch_size, seed=seed, device=device
    )
    batches = loader.fixed_batches(n)
    for x, y in batches:
        check_ids([int(x.max()), int(y.max())], run, loader.path)
    return batches


def choose_text(run, cfg: HeadsConfig, ddir: Path | None, probe) -> tuple[list[int], str]:
    """The token ids to draw, and where they came from."""
    import numpy as np

    given = [k for k in ("text", "text_file", "split") if getattr(cfg, k) is not None]
    if len(given) > 1:
        raise UserError(f"pass only one of text=, text_file=, split= (got {', '.join(given)})")
    block = run.model.config.block_size
    if cfg.text is not None or cfg.text_file is not None:
        if cfg.text_file is not None:
            text, source = read_text_file(cfg.text_file, "text_file"), f"file {Path(cfg.text_file).name}"
        else:
            text, source = str(cfg.text), "text"
        ids = run.tokenizer.encode(text) if text else []
        if not ids:
            raise UserError(f'the {source} is empty; pass text="..." with at least two tokens')
        if len(ids) < 2:
            raise UserError(f"the text encodes to {len(ids)} token(s); pass at least two tokens")
        if cfg.max_tokens:
            ids = ids[: cfg.max_tokens]
        return ids, source
    split = cfg.split or ("val" if ddir is not None else None)
    if split is None:
        return probe[0].tolist(), "repeated random tokens (no prepared data found)"
    if ddir is None:
        raise UserError(
            f"split={split} needs the run's prepared data; pass data_dir=<prepared folder> or text=..."
        )
    from gptlab.data import load_meta

    meta = load_meta(ddir)
    n = cfg.max_tokens or min(block, 256)
    arr = np.memmap(ddir / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")[:n]
    check_ids(arr, run, ddir / f"{split}.bin")
    return [int(t) for t in arr], f"the first {n} tokens of {split}.bin"


def check_length(n: int, model) -> str | None:
    """Refuse a text the model or the page cannot take; a note when it runs past the training length."""
    from gptlab.interp.pattern_codec import encoded_bytes, encoding_for

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
    mc = model.config
    size = encoded_bytes(mc.n_layer * mc.n_head, n, encoding_for(n))
    if size > PAGE_MAX_BYTES:
        fit = next(
            t
            for t in range(n, 1, -64)
            if encoded_bytes(mc.n_layer * mc.n_head, t, encoding_for(t)) <= PAGE_MAX_BYTES
        )
        raise UserError(
            f"the text has {n} tokens: the patterns of {mc.n_layer} x {mc.n_head} heads would make heads.html "
            f"{size / 1e6:.0f} MB (at most {PAGE_MAX_BYTES / 1e6:.0f}); pass max_tokens={fit}"
        )
    if n > mc.block_size:
        return (
            f"the text ({n} tokens) is past the model's training length ({mc.block_size}): its {mc.position} "
            f"positions from {mc.block_size} on are extrapolated"
        )
    return None


def open_run(cfg: HeadsConfig):
    """The run named by ``run=`` on ``device=``, with ``threads`` applied (the report and the server)."""
    from gptlab.open_run import load_run
    from gptlab.runtime.device import pick_device, set_threads

    device = pick_device(cfg.device)
    run = load_run(cfg.run, device=device, step=cfg.step)
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    # the largest forward the report runs: a batch of block_size-long val rows (forward = a third of training)
    block = run.model.config.block_size
    set_threads(cfg.threads, run.model.flops_per_token(block) / 3 * block * cfg.icl.batch_size, device)
    return run


def default_out(run) -> Path:
    """<run>/heads; for a Hugging Face model folder runs/hf/<folder name>/heads, never inside the model's folder
    (a hub id already has its run_dir there)."""
    hf_dir = (run.config.get("hf") or {}).get("dir")
    if hf_dir is None or Path(hf_dir) != run.run_dir:
        return run.run_dir / "heads"
    from gptlab.interop.hf import HF_RUNS

    out = HF_RUNS / run.run_dir.name / "heads"
    print(f"note: {run.run_dir} is a Hugging Face model folder: the report goes to {out} (out= to choose)")
    return out


def report_probe(run, cfg: HeadsConfig):
    """The repeated-random-token probe of the report (gptlab/interp/tracking.py), for ``run``'s model."""
    import torch

    from gptlab.interp.tracking import probe_for

    torch.manual_seed(0)
    model = run.model
    return probe_for(
        model,
        run.meta,
        cfg.probe.batch_size,
        reps=cfg.probe.reps,
        seed=cfg.probe.seed,
        device=next(model.parameters()).device,
    )


def measure(run, cfg: HeadsConfig, ids: list[int], ddir: Path | None, probe):
    """Every head of ``run``'s model measured on the tokens ``ids`` (interp.head_report.analyse), the val batches
    from ``ddir``: the report, and the val rows its content-independent metrics used (or None)."""
    import torch

    from gptlab.interp.head_report import analyse
    from gptlab.interp.html import token_texts

    torch.manual_seed(0)
    model = run.model
    device = next(model.parameters()).device
    block = model.config.block_size
    text_ids = torch.tensor(ids, dtype=torch.long, device=device)
    eval_b = data_batches(run, ddir, "val", block, cfg.icl.batch_size, cfg.icl.batches, seed=1, device=device)
    metric_x = eval_b[0][0][: cfg.metrics.batch_size] if eval_b else None
    abl_b = None
    if cfg.ablation.enabled:
        abl_T = min(block, cfg.ablation.seq_len or block)
        abl_b = data_batches(
            run,
            ddir,
            "val",
            abl_T,
            cfg.ablation.batch_size,
            cfg.ablation.batches,
            seed=2,
            device=device,
        )
    rep = analyse(model, text_ids, token_texts(run.tokenizer, ids), probe, metric_x, eval_b, abl_b)
    return rep, metric_x


def sample_text(run, ddir: Path | None, n: int = 64) -> str | None:
    """The text the live page opens with: the first ``n`` tokens of the run's val.bin (None without it)."""
    if ddir is None:
        return None
    import numpy as np

    from gptlab.data import load_meta

    arr = np.memmap(ddir / "val.bin", dtype=np.dtype(load_meta(ddir)["dtype"]), mode="r")
    ids = [int(t) for t in arr[: min(n, run.model.config.block_size)]]
    check_ids(ids, run, ddir / "val.bin")
    return run.tokenizer.decode(ids) or None
