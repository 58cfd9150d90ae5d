"""The prompt of a sampling call: read it (option, file or stdin), the run's default, and encode it checked."""

from __future__ import annotations

import sys

from gptlab.cli import read_text_file
from gptlab.errors import UserError


def read_prompt(prompt: str | None, prompt_file: str | None, stdin=None) -> str | None:
    """The prompt text: from `prompt_file` when set, else `prompt`; "-" for either reads stdin; None for the
    run's default prompt (`default_prompt`)."""
    stdin = sys.stdin if stdin is None else stdin
    if prompt_file is not None:
        return stdin.read() if prompt_file == "-" else read_text_file(prompt_file, "prompt_file")
    if prompt == "-":
        return stdin.read()
    return prompt


def default_prompt(run, max_tokens: int = 32) -> str:
    """The prompt of ``prompt=null``: the first line of the run's training text (at most ``max_tokens`` tokens, not
    its newline) when its prepared data is here; else the start of a document: the end-of-text token ("") where
    the tokenizer has one, "\\n" where it has none (a char model). Greedy decoding of a small char model from
    "\\n" can print newlines forever (a newline is the likeliest character after a newline in Shakespeare); from
    the middle of a line it prints text."""
    import numpy as np

    from gptlab.data import find_prepared, load_meta

    data_cfg = (run.config or {}).get("data")
    found = find_prepared(data_cfg, run.meta) if isinstance(data_cfg, dict) else None
    if found is not None:
        n = max(1, min(max_tokens, run.model.config.block_size // 2))
        ids = np.memmap(found / "train.bin", dtype=np.dtype(load_meta(found)["dtype"]), mode="r")[:n]
        text = run.tokenizer.decode([int(t) for t in ids])
        line = text.split("\n", 1)[0]
        if line.strip():
            return line
    return "" if getattr(run.tokenizer, "eot_id", None) is not None else "\n"


def encode_prompt(tokenizer, meta: dict, text: str, max_seq_len: int | None) -> list[int]:
    """Prompt text -> token ids, checked against the vocabulary and the model's length limit."""
    chars = meta.get("chars")
    if chars is not None:  # char tokenizer: name what the vocabulary lacks, in order of appearance
        vocab = set(chars)
        missing = list(dict.fromkeys(ch for ch in text if ch not in vocab))
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise UserError(
                f"the prompt has {len(missing)} character(s) this char model's vocabulary lacks: {shown}; "
                "remove or replace them"
            )
    if text == "":
        eot = getattr(tokenizer, "eot_id", None)
        if eot is None:
            raise UserError(
                "empty prompt and this tokenizer has no end-of-text token to start from; give a prompt"
            )
        return [int(eot)]
    ids = list(tokenizer.encode(text))
    if not ids:
        raise UserError("the prompt encodes to no tokens; give a non-empty prompt")
    if max_seq_len is not None and len(ids) > max_seq_len:
        raise UserError(
            f"the prompt is {len(ids)} tokens but this model's position scheme cannot go past block_size "
            f"{max_seq_len}; shorten the prompt to at most {max_seq_len} tokens"
        )
    return ids
