"""State dicts between gptlab and Hugging Face GPT-2 / Llama / Mistral (pure torch, no transformers).

Our names: ``tok_emb``, ``pos.emb`` (learned), ``blocks.{l}.ln_1``, ``blocks.{l}.attn.{q,k,v,o}_proj``,
``blocks.{l}.ln_2``, ``blocks.{l}.mlp.{fc,proj}`` or ``.mlp.{gate,up,proj}``, ``ln_f``, ``lm_head``.

GPT-2 stores its linear layers as ``Conv1D`` weights of shape (in, out) — the transpose of ``nn.Linear`` —
and fuses Q, K and V into one ``c_attn`` of width 3C. Llama and Mistral use ``nn.Linear`` with our layout
(RoPE pairs dimensions half-split in both, so no permutation). Both directions return every tensor the
target module expects, the tied head included (as the embedding matrix).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gptlab.errors import UserError
from gptlab.model import GPTConfig

from .hf_config import NO_MLP_WIDTH

State = dict[str, Tensor]
LLAMA_LAYER = {  # ours -> theirs, inside a block (weights and biases alike)
    "ln_1": "input_layernorm",
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.o_proj": "self_attn.o_proj",
    "ln_2": "post_attention_layernorm",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.proj": "mlp.down_proj",
}


class _Tensors:
    """A Hugging Face state dict read by name; a missing tensor is one line naming it."""

    def __init__(self, state: State, prefix: str, source: str):
        # checkpoints saved from the base model (GPT2Model, LlamaModel) lack the "transformer." / "model." prefix
        has_prefix = any(k.startswith(prefix) for k in state)
        self.state = {k.removeprefix(prefix) if has_prefix else k: v for k, v in state.items()}
        self.source = source

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.state:
            raise UserError(
                f"{self.source} has no tensor {name!r}; it is not a complete checkpoint of its config"
            )
        return self.state[name]

    def get(self, name: str) -> Tensor | None:
        return self.state.get(name)


# ---------------------------------------------------------------------------------------------- import
def from_hf(family: str, cfg: GPTConfig, state: State, source: str = "the checkpoint") -> State:
    """Our state dict (for ``GPT(cfg)``) from a Hugging Face one of ``family`` ('gpt2', 'llama', 'mistral')."""
    return _from_gpt2(cfg, state, source) if family == "gpt2" else _from_llama(cfg, state, source)


def _from_gpt2(cfg: GPTConfig, state: State, source: str) -> State:
    sd, C = _Tensors(state, "transformer.", source), cfg.n_embd
    out = {"tok_emb.weight": sd["wte.weight"], "pos.emb.weight": sd["wpe.weight"][: cfg.block_size]}
    for l in range(cfg.n_layer):
        p, q = f"h.{l}.", f"blocks.{l}."
        for ours, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
            out[q + ours + ".weight"] = sd[p + theirs + ".weight"]
            out[q + ours + ".bias"] = sd[p + theirs + ".bias"]
        # Conv1D (in, out) -> Linear (out, in); c_attn's output columns are [q | k | v]
        for name, w, b in zip(
            ("q_proj", "k_proj", "v_proj"),
            sd[p + "attn.c_attn.weight"].t().split(C, dim=0),
            sd[p + "attn.c_attn.bias"].split(C),
        ):
            out[q + f"attn.{name}.weight"], out[q + f"attn.{name}.bias"] = w, b
        for ours, theirs in (
            ("attn.o_proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            out[q + ours + ".weight"] = sd[p + theirs + ".weight"].t()
            out[q + ours + ".bias"] = sd[p + theirs + ".bias"]
    out["ln_f.weight"], out["ln_f.bias"] = sd["ln_f.weight"], sd["ln_f.bias"]
    out["lm_head.weight"] = out["tok_emb.weight"] if cfg.tie_embeddings else _head(state, source)
    return {k: v.contiguous() for k, v in out.items()}


def _from_llama(cfg: GPTConfig, state: State, source: str) -> State:
    sd = _Tensors(state, "model.", source)
    out = {"tok_emb.weight": sd["embed_tokens.weight"]}
    for l in range(cfg.n_layer):
        for ours, theirs in LLAMA_LAYER.items():
            out[f"blocks.{l}.{ours}.weight"] = sd[f"layers.{l}.{theirs}.weight"]
            if cfg.bias and not ours.startswith("ln_"):
                out[f"blocks.{l}.{ours}.bias"] = sd[f"layers.{l}.{theirs}.bias"]
    out["ln_f.weight"] = sd["norm.weight"]
    out["lm_head.weight"] = out["tok_emb.weight"] if cfg.tie_embeddings else _head(state, source)
    return out


def _head(state: State, source: str) -> Tensor:
    if "lm_head.weight" not in state:
        raise UserError(f"{source} has untied embeddings (tie_word_embeddings=false) but no lm_head.weight")
    return state["lm_head.weight"]


def drop_empty_mlps(cfg_values: dict, state: State) -> tuple[dict, State]:
    """Read an exported attention-only model back as one: MLPs of width NO_MLP_WIDTH whose output projection
    (and its bias) is exactly zero add nothing, so the config becomes mlp=none and their tensors go.
    """
    L = cfg_values["n_layer"]
    if cfg_values.get("mlp_hidden") != NO_MLP_WIDTH:
        return cfg_values, state
    for l in range(L):
        w, b = state[f"blocks.{l}.mlp.proj.weight"], state.get(f"blocks.{l}.mlp.proj.bias")
        if w.any() or (b is not None and b.any()):
            return cfg_values, state
    kept = {
        k: v
        for k, v in state.items()
        if not k.startswith(tuple(f"blocks.{l}.{m}." for l in range(L) for m in ("mlp", "ln_2")))
    }
    return {**cfg_values, "mlp": "none", "mlp_hidden": None}, kept


# ---------------------------------------------------------------------------------------------- export
def to_hf(family: str, cfg: GPTConfig, state: State) -> State:
    """The Hugging Face state dict of ``family`` for our ``state`` (see hf_config.family_for)."""
    return _to_gpt2(cfg, state) if family == "gpt2" else _to_llama(cfg, state)


def _zeros(*shape, like: Tensor) -> Tensor:
    return torch.zeros(*shape, dtype=like.dtype, device=like.device)


def _to_gpt2(cfg: GPTConfig, sd: State) -> State:
    C, hs, n_rep = cfg.n_embd, cfg.head_dim, cfg.n_head // cfg.kv_heads
    ref = sd["tok_emb.weight"]

    def bias(name: str, width: int) -> Tensor:  # bias=false: GPT-2's biases are there, and zero
        return sd[name] if cfg.bias else _zeros(width, like=ref)

    def kv_for_every_head(t: Tensor) -> Tensor:  # (nkv*hs, ...) -> (nh*hs, ...): GQA as MHA, exactly
        return t.unflatten(0, (cfg.kv_heads, hs)).repeat_interleave(n_rep, dim=0).flatten(0, 1)

    out = {"transformer.wte.weight": ref, "transformer.wpe.weight": sd["pos.emb.weight"]}
    for l in range(cfg.n_layer):
        q, p = f"blocks.{l}.", f"transformer.h.{l}."
        out[p + "ln_1.weight"], out[p + "ln_1.bias"] = sd[q + "ln_1.weight"], bias(q + "ln_1.bias", C)
        wq, wk, wv = (sd[q + f"attn.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj"))
        bq, bk, bv = (
            bias(q + f"attn.{n}.bias", w.shape[0])
            for n, w in zip(("q_proj", "k_proj", "v_proj"), (wq, wk, wv))
        )
        out[p + "attn.c_attn.weight"] = torch.cat([wq, kv_for_every_head(wk), kv_for_every_head(wv)]).t()
        out[p + "attn.c_attn.bias"] = torch.cat([bq, kv_for_every_head(bk), kv_for_every_head(bv)])
        out[p + "attn.c_proj.weight"] = sd[q + "attn.o_proj.weight"].t()
        out[p + "attn.c_proj.bias"] = bias(q + "attn.o_proj.bias", C)
        if cfg.mlp == "none":  # a zero MLP of width 1 behind a LayerNorm with weight 1: adds exactly nothing
            out[p + "ln_2.weight"], out[p + "ln_2.bias"] = torch.ones_like(ref[0]), _zeros(C, like=ref)
            out[p + "mlp.c_fc.weight"], out[p + "mlp.c_fc.bias"] = (
                _zeros(C, NO_MLP_WIDTH, like=ref),
                _zeros(NO_MLP_WIDTH, like=ref),
            )
            out[p + "mlp.c_proj.weight"], out[p + "mlp.c_proj.bias"] = (
                _zeros(NO_MLP_WIDTH, C, like=ref),
                _zeros(C, like=ref),
            )
            continue
        H = cfg.hidden_dim
        out[p + "ln_2.weight"], out[p + "ln_2.bias"] = sd[q + "ln_2.weight"], bias(q + "ln_2.bias", C)
        out[p + "mlp.c_fc.weight"], out[p + "mlp.c_fc.bias"] = (
            sd[q + "mlp.fc.weight"].t(),
            bias(q + "mlp.fc.bias", H),
        )
        out[p + "mlp.c_proj.weight"] = sd[q + "mlp.proj.weight"].t()
        out[p + "mlp.c_proj.bias"] = bias(q + "mlp.proj.bias", C)
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd["ln_f.weight"], bias("ln_f.bias", C)
    out["lm_head.weight"] = sd["lm_head.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def _to_llama(cfg: GPTConfig, sd: State) -> State:
    ref = sd["tok_emb.weight"]
    C, W = cfg.n_embd, NO_MLP_WIDTH
    out = {"model.embed_tokens.weight": ref}
    for l in range(cfg.n_layer):
        for ours, theirs in LLAMA_LAYER.items():
            q, p = f"blocks.{l}.{ours}", f"model.layers.{l}.{theirs}"
            if cfg.mlp == "none" and (ours == "ln_2" or ours.startswith("mlp.")):
                shape = {"ln_2": (C,), "mlp.gate": (W, C), "mlp.up": (W, C), "mlp.proj": (C, W)}[ours]
                out[p + ".weight"] = (
                    torch.ones(C, dtype=ref.dtype) if ours == "ln_2" else _zeros(*shape, like=ref)
                )
                if cfg.bias and ours != "ln_2":
                    out[p + ".bias"] = _zeros(shape[0], like=ref)
                continue
            out[p + ".weight"] = sd[q + ".weight"]
            if cfg.bias and not ours.startswith("ln_"):
                out[p + ".bias"] = sd[q + ".bias"]
    out["model.norm.weight"] = sd["ln_f.weight"]
    out["lm_head.weight"] = sd["lm_head.weight"]
    return out
