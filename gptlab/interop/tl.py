"""gptlab models in TransformerLens 4.x: a ``TransformerBridge`` over the model's exact Hugging Face twin.

TransformerLens 4 dropped ``HookedTransformer`` (its own re-implementation, fed converted weights) for
``TransformerBridge``, which wraps the Hugging Face module itself and exposes TransformerLens's hook names
(``blocks.{l}.attn.hook_pattern``, ``hook_z``, ``hook_resid_pre``, ...), ``run_with_cache`` and
``run_with_hooks``. Our export already builds that HF module (interop.hf_model.to_hf_model), so the bridge sees the
same function as our model: logits and attention patterns equal ours. The bridge keeps the raw weights (no
LayerNorm folding or weight centering, unlike HookedTransformer's defaults); ``bridge.enable_compatibility_mode()``
gives HookedTransformer's processed numerics, which leave the patterns as they are and shift each position's
logits by a constant.

String input: TransformerLens prepends a BOS token by default; :func:`fit_special_tokens` makes it the run's
end-of-text token, or, for tokenizers without one (char, ids), turns it off instead of inventing an id the
model lacks.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from gptlab.errors import UserError
from gptlab.model import GPT, GPTConfig

from .hf_model import check_gap, logit_gap, probe_ids, quiet_transformers, to_hf_model
from .hf_tokenizer import save_tokenizer


def _bridge_class():
    try:
        from transformer_lens import TransformerBridge
    except ImportError:
        raise UserError(
            "TransformerLens is not installed (or is older than 4.0, without TransformerBridge): "
            "pip install -e '.[hf]'"
        ) from None
    return TransformerBridge


def _tokenizer(meta: dict | None, cfg: GPTConfig, folder: Path):
    """The run's tokenizer as TransformerLens wants it: loaded by AutoTokenizer from a folder (TransformerLens
    re-loads it from there to add a BOS token), written into ``folder`` unless it is there already. Without a
    tokenizer with an HF form, the token ids themselves ("0", "1", ...) are the tokens."""
    transformers = quiet_transformers()
    if not (folder / "tokenizer.json").is_file():
        if not (meta and save_tokenizer(meta, folder, cfg.block_size)):
            save_tokenizer({"tokenizer": "ids", "vocab_size": cfg.vocab_size}, folder, cfg.block_size)
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def to_transformer_lens(model: GPT, meta: dict | None = None, device: str | torch.device = "cpu"):
    """A TransformerLens ``TransformerBridge`` computing ``model`` (``meta``: the run's tokenizer meta).

    ``from gptlab.open_run import load_run; run = load_run("runs/x")``, then
    ``tl = to_transformer_lens(run.model, run.meta)``; ``tl.run_with_cache(tokens)`` records
    ``blocks.{l}.attn.hook_pattern`` (B, n_head, T, T) equal to ``run.model.attention_patterns(tokens)[l]``.
    """
    bridge = _bridge_class()
    hf = to_hf_model(model, (meta or {}).get("eot_id"))  # fp32 copy of the weights; model is left as it is
    with tempfile.TemporaryDirectory(prefix="gptlab-tl-") as tmp:
        tok = _tokenizer(meta, model.config, Path(tmp))
        booted = bridge.boot_transformers("gptlab-model", hf_model=hf, tokenizer=tok, device=str(device))
    return fit_special_tokens(booted)


def bridge_from_dir(path: Path, meta: dict | None, cfg: GPTConfig):
    """TransformerLens's bridge over an exported HF directory, booted from the files (as a user would)."""
    bridge = _bridge_class()
    with tempfile.TemporaryDirectory(prefix="gptlab-tl-") as tmp:
        folder = path if (path / "tokenizer.json").is_file() else Path(tmp)
        booted = bridge.boot_transformers(str(path), tokenizer=_tokenizer(meta, cfg, folder), device="cpu")
    return fit_special_tokens(booted)


def fit_special_tokens(bridge):
    """Keep TransformerLens's BOS and pad tokens inside the model's vocabulary; returns ``bridge``.

    A tokenizer without an end-of-text token (char, ids) has no BOS, EOS or pad token, so TransformerLens
    adds ``<|endoftext|>`` as a new id (the vocabulary size) and prepends it to every string, for which the
    embedding has no row. Such runs get no BOS (``prepend_bos`` off by default, as gptlab's own tools read
    text) and pad with id 0 (right padding: a shorter string's tokens never attend to it). A run with an
    end-of-text token (gpt2, most hf tokenizers) keeps TransformerLens's default: that token as BOS, as its
    training data starts each document. An exported directory cannot say this to TransformerLens (a token
    its files name as BOS becomes special, and decoding with ``skip_special_tokens`` drops it from text), so
    a bridge booted from a char or ids export needs this call too.
    """
    tok, vocab_size = bridge.tokenizer, bridge.cfg.d_vocab
    if tok is None:
        return bridge
    if tok.bos_token_id is None or tok.bos_token_id >= vocab_size:
        bridge.cfg.default_prepend_bos = False
    if tok.pad_token_id is None or tok.pad_token_id >= vocab_size:
        tok.pad_token = tok.convert_ids_to_tokens(0)
    return bridge


def check_bridge(bridge, model: GPT) -> dict[str, float]:
    """Logit and attention-pattern gaps between a bridge and our model on probe ids; UserError if too large."""
    idx = probe_ids(model.config)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.config.n_layer)]
    dev = next(model.parameters()).device
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(idx, names_filter=lambda n: n in names)
        ours = model(idx.to(dev))[0].float().cpu()
    theirs_p = torch.stack([cache[n] for n in names]).float().cpu()  # (n_layer, B, n_head, T, T)
    ours_p = model.attention_patterns(idx.to(dev)).float().cpu()
    logits = logits.cpu()
    gaps = {
        "transformer_lens_logits": logit_gap(ours, logits.float()),
        "transformer_lens_patterns": float((ours_p - theirs_p).abs().max()),
    }
    for what, gap in gaps.items():
        check_gap(gap, f"TransformerLens ({what})")
    return gaps
