"""``python train.py init_from=<HF hub id or directory>``: start a run from pretrained weights.

The pretrained model fixes the architecture: the run's ``model`` section becomes the GPTConfig its
Hugging Face config maps to (interop.hf_config), written to config.yaml and every checkpoint, so a resume
reads its own checkpoint and never the hub. On the command line only fields that leave the weights as they
are may change (``FREE``); another ``model.<field>`` that differs from the pretrained one, or a ``model=``
choice, is refused in one line. The data must be tokenized with the model's tokenizer (gpt2 for GPT-2; the
model's own tokenizer.json, ``data.tokenizer=<path>``, for Llama-family models), checked before any data is
prepared.

A resume reads neither the pretrained model nor, once it is gone, the tokenizer.json that ``data.tokenizer``
named: the checkpoint holds that tokenizer whole, and :func:`carried_tokenizer` writes it into the run folder
for the data preparation to read (the same content, so prepared data is reused as it is).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gptlab.data import DataConfig
from gptlab.data.tokenizers import HFTokenizer, is_tokenizer_path, read_tokenizer_json, text_sha256
from gptlab.errors import UserError
from gptlab.model import GPTConfig
from gptlab.rundir.files import atomic_write, write_json

from .resume import Plan, override_keys

FREE = ("dropout", "attn_impl", "block_size")  # model fields a fine-tune may set: no weight changes shape
CARRIED = "tokenizer"  # <run>/tokenizer/: the checkpoint's data tokenizer, for a resume whose source is gone


def start_from_pretrained(plan: Plan, overrides: list[str]):
    """For a fresh start with ``init_from`` set: read the pretrained model (interop.hf.Pretrained), put its
    model config into ``plan.config`` and return it; None otherwise (no init_from, or a resume)."""
    source = plan.config.get("init_from")
    if not source or plan.ckpt is not None:
        return None
    from gptlab.interop.hf import open_pretrained, read_pretrained_weights  # transformers: only for init_from

    source = str(source)
    keys = override_keys(overrides)
    if "model" in keys:
        raise UserError(
            f"init_from={source} takes the architecture from the pretrained model; drop model=... "
            f"(only model.{', model.'.join(FREE)} may be set)"
        )
    requested = plan.config.get("model", {})
    fields = [k.split(".", 1)[1] for k in keys if k.startswith("model.")]
    changes = {f: requested[f] for f in fields if f in FREE and f in requested}
    expect = {f: requested[f] for f in fields if f not in FREE and f in requested}
    pre = open_pretrained(source, changes, expect)
    check_data_tokenizer(pre, DataConfig.from_dict(plan.config["data"]))
    pre = read_pretrained_weights(pre)
    # every field: the pretrained ones, else the defaults
    plan.config["model"] = GPTConfig(**pre.config).to_dict()
    return pre


def check_data_tokenizer(pre, dcfg: DataConfig) -> None:
    """The data must be tokenized as the pretrained model reads tokens (one line saying how, if not)."""
    want = pre.meta["tokenizer"]
    if want == "gpt2":
        if dcfg.tokenizer != "gpt2":
            raise UserError(
                f"init_from={pre.source} reads GPT-2 BPE tokens, but data={dcfg.name} is tokenized with "
                f"{dcfg.tokenizer}; use data=shakespeare_gpt2 (or any data config with data.tokenizer=gpt2)"
            )
        return
    own = pre.local / "tokenizer.json"
    how = (
        f"data.tokenizer={own}"
        if own.is_file()
        else f"save its tokenizer as tokenizer.json (AutoTokenizer.from_pretrained('{pre.source}')"
        ".save_pretrained(dir)) and pass data.tokenizer=<dir>"
    )
    if not is_tokenizer_path(dcfg.tokenizer):
        raise UserError(
            f"init_from={pre.source} has its own tokenizer, but data={dcfg.name} is tokenized with "
            f"{dcfg.tokenizer}; prepare the data with the model's tokenizer: {how}"
        )
    if text_sha256(read_tokenizer_json(dcfg.tokenizer)[1]) != pre.meta["hf_tokenizer_sha256"]:
        raise UserError(
            f"data.tokenizer={dcfg.tokenizer} is not the tokenizer of init_from={pre.source}; use {how}"
        )


def carried_tokenizer(plan: Plan, run_path: Path, dcfg: DataConfig) -> DataConfig:
    """``dcfg`` for the data preparation of a resume: when ``data.tokenizer`` names a tokenizer.json that is no
    longer there (the init_from directory was deleted, say), the checkpoint's own copy of it, written into
    ``<run>/tokenizer/`` (tokenizer.json, and tokenizer_config.json naming its end-of-text token). The run's
    config keeps the path it was started with, so the same command line resumes it."""
    if plan.ckpt is None or not is_tokenizer_path(dcfg.tokenizer):
        return dcfg
    named = Path(dcfg.tokenizer).expanduser()
    if (named / "tokenizer.json" if named.is_dir() else named).is_file():
        return dcfg
    meta = plan.ckpt.get("tokenizer") or {}
    text = meta.get("hf_tokenizer")
    if meta.get("tokenizer") != "hf" or not isinstance(text, str):
        return dcfg  # nothing carried (an older checkpoint): the preparation says what is missing
    folder = Path(run_path) / CARRIED
    atomic_write(folder / "tokenizer.json", text)
    eot = meta.get("eot_id")
    if eot is not None:
        write_json(
            folder / "tokenizer_config.json", {"eos_token": HFTokenizer(text).tok.id_to_token(int(eot))}
        )
    return dataclasses.replace(dcfg, tokenizer=str(folder))
