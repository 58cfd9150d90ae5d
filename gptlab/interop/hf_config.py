"""Hugging Face config <-> GPTConfig: which architectures map exactly, and one line naming the field if not.

Export (:func:`family_for`, :func:`to_hf_config`): the Hugging Face class that computes the same function.

    gpt2     GPT2LMHeadModel     position=learned, norm=layernorm, mlp=gelu | gelu_tanh | relu2 | none
    mistral  MistralForCausalLM  position=rope, norm=rmsnorm, mlp=swiglu | none, bias=false
    llama    LlamaForCausalLM    the same with bias=true (and no window shorter than block_size)

Past block_size our sampler keeps a RoPE model's attention to a window of block_size keys (model/generate.py);
Mistral's sliding_window says the same to transformers, so a bias-free RoPE model is exported as Mistral and
agrees at every length. Llama has no such field (:func:`past_block_size`: where an export stops agreeing).

Each takes any n_layer/n_head/n_embd/vocab/block_size, tied or untied embeddings, bias or none (Mistral:
none), and any init (zero_init_proj only changes the starting weights); none has a query/key norm or a
logit soft cap, so qk_norm=true and a logit_softcap are refused. Where gptlab lacks a parameter the HF
class has, the export writes the value that makes it vanish: zero biases for bias=false on GPT-2
(LayerNorm included), a zero MLP of width 1 for mlp=none, K/V heads repeated for their query group for
GQA/MQA on GPT-2 (which only has MHA). Anything else — ALiBi, T5,
Shaw-relative, sinusoidal or no positions, LayerNorm with RoPE, ... — is refused in one line that names the
field and the nearest mappable choice.

Import (:func:`from_hf_config`): gpt2, llama and mistral configs (a dict, as ``AutoConfig.to_dict()`` gives
it); a field our model cannot express (GPT-2's scale_attn_by_inverse_layer_idx, Llama's rope scaling, a
head_dim other than hidden_size / heads, ...) is refused in one line naming it.
"""

from __future__ import annotations

from gptlab.errors import UserError
from gptlab.model import GPTConfig
from gptlab.model.config import swiglu_hidden

FAMILIES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
# our ungated MLP activations <-> GPT-2's activation_function (all exact up to float rounding)
GPT2_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu2": "relu2"}
FROM_GPT2_ACT = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu2": "relu2",
}
NO_MLP_WIDTH = 1  # mlp=none is exported as a zero MLP this wide (and read back as mlp=none)
ROPE_CLASSES = "MistralForCausalLM, or LlamaForCausalLM with bias=true"
NEAREST_POSITION = {
    "alibi": f"position=rope ({ROPE_CLASSES})",
    "t5": f"position=rope ({ROPE_CLASSES})",
    "relative": f"position=rope ({ROPE_CLASSES})",
    "none": f"position=rope ({ROPE_CLASSES})",
    "sinusoidal": f"position=learned (GPT2LMHeadModel) or position=rope ({ROPE_CLASSES})",
}


def _refuse(field: str, value, why: str, nearest: str):
    raise UserError(f"cannot export model.{field}={value}: {why}; nearest mappable choice: {nearest}")


# ---------------------------------------------------------------------------------------------- export
def family_for(cfg: GPTConfig) -> str:
    """'gpt2', 'llama' or 'mistral': the HF class that computes ``cfg``'s model exactly (UserError if none)."""
    if cfg.qk_norm:
        _refuse("qk_norm", "true", "GPT2LMHeadModel, LlamaForCausalLM and MistralForCausalLM have no query/key "
                "norm", "qk_norm=false")  # fmt: skip
    if cfg.logit_softcap is not None:
        _refuse("logit_softcap", cfg.logit_softcap, "GPT2LMHeadModel, LlamaForCausalLM and MistralForCausalLM "
                "do not cap their logits", "logit_softcap=null")  # fmt: skip
    if cfg.position == "learned":
        if cfg.norm != "layernorm":
            _refuse("norm", cfg.norm, "GPT2LMHeadModel (position=learned) has LayerNorm",
                    "norm=layernorm, or position=rope for MistralForCausalLM (RMSNorm)")  # fmt: skip
        if cfg.mlp not in (*GPT2_ACT, "none"):
            _refuse("mlp", cfg.mlp, "GPT2LMHeadModel (position=learned) has an ungated MLP",
                    "mlp=gelu_tanh, or position=rope norm=rmsnorm for MistralForCausalLM (SwiGLU)")  # fmt: skip
        if cfg.window is not None and cfg.window < cfg.block_size:  # a window >= block_size never bites
            _refuse("window", cfg.window, "GPT2LMHeadModel has no sliding window",
                    "window=null, or position=rope norm=rmsnorm mlp=swiglu bias=false for MistralForCausalLM")  # fmt: skip
        return "gpt2"
    if cfg.position == "rope":
        if cfg.norm != "rmsnorm":
            _refuse("norm", cfg.norm, "Mistral/LlamaForCausalLM (position=rope) have RMSNorm",
                    "norm=rmsnorm, or position=learned for GPT2LMHeadModel (LayerNorm)")  # fmt: skip
        if cfg.mlp not in ("swiglu", "none"):
            _refuse("mlp", cfg.mlp, "Mistral/LlamaForCausalLM (position=rope) have a SwiGLU MLP",
                    "mlp=swiglu, or position=learned for GPT2LMHeadModel (gelu, gelu_tanh, relu2)")  # fmt: skip
        if not cfg.bias:  # Mistral's sliding_window carries the window our sampler uses past block_size
            return "mistral"
        if cfg.window is not None and cfg.window < cfg.block_size:
            _refuse("bias", "true", "MistralForCausalLM (RoPE with a sliding window) has no biases",
                    "bias=false, or window=null for LlamaForCausalLM")  # fmt: skip
        return "llama"
    _refuse("position", cfg.position, "no Hugging Face class among GPT2LMHeadModel, LlamaForCausalLM and "
            "MistralForCausalLM computes it", NEAREST_POSITION.get(cfg.position, "position=rope"))  # fmt: skip
    raise AssertionError  # unreachable: _refuse raises


def generation_window(cfg: GPTConfig) -> int:
    """The keys each query sees when our sampler runs a RoPE model past block_size (model/generate.py):
    the configured window, at most block_size. Within block_size it is plain causal attention (or the window)."""
    return cfg.block_size if cfg.window is None else min(cfg.window, cfg.block_size)


def past_block_size(cfg: GPTConfig) -> str | None:
    """Where the exported model silently stops computing what our sampler computes, or None.

    (GPT-2 exports stop at block_size too, but not silently: transformers fails on a longer input.)"""
    family, n = family_for(cfg), cfg.block_size
    if family == "llama":
        return (
            f"past block_size={n} tokens LlamaForCausalLM attends to every earlier token, while gptlab's sampler "
            f"keeps the last {n} (Llama has no sliding window; with bias=false the export is MistralForCausalLM "
            f"and agrees at every length); the two agree on sequences of up to {n} tokens"
        )
    return None


def to_hf_config(cfg: GPTConfig, eot_id: int | None = None) -> tuple[str, dict]:
    """(family, keyword arguments of its transformers config class) for ``cfg``; ``eot_id`` becomes bos/eos."""
    family = family_for(cfg)
    hidden = NO_MLP_WIDTH if cfg.mlp == "none" else cfg.hidden_dim
    eot = eot_id if eot_id is not None and eot_id < cfg.vocab_size else None
    if family == "gpt2":
        return family, dict(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=hidden, activation_function=GPT2_ACT.get(cfg.mlp, "gelu_new"),
            resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
            layer_norm_epsilon=cfg.norm_eps, scale_attn_weights=True, tie_word_embeddings=cfg.tie_embeddings,
            bos_token_id=eot, eos_token_id=eot,
        )  # fmt: skip
    kwargs = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=hidden,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, attention_dropout=cfg.dropout,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        bos_token_id=eot, eos_token_id=eot,
    )  # fmt: skip
    if family == "llama":
        kwargs.update(attention_bias=cfg.bias, mlp_bias=cfg.bias)
    else:
        kwargs.update(sliding_window=generation_window(cfg))
    return family, kwargs


# ---------------------------------------------------------------------------------------------- import
def _unsupported(model_type: str, field: str, value, why: str):
    raise UserError(f"this {model_type} model has {field}={value!r}, which gptlab cannot express ({why})")


def _mlp_hidden(width: int, default: int) -> int | None:
    return None if width == default else int(width)


def from_hf_config(d: dict) -> tuple[str, dict]:
    """(family, GPTConfig fields) of a Hugging Face config dict; UserError naming a field we cannot express."""
    model_type = d.get("model_type")
    if model_type == "gpt2":
        return "gpt2", _from_gpt2(d)
    if model_type in ("llama", "mistral"):
        return model_type, _from_llama(d, model_type)
    raise UserError(
        f"model_type={model_type!r} is not supported; gptlab reads gpt2, llama and mistral models "
        "(GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM)"
    )


def _from_gpt2(d: dict) -> dict:
    for field, ok, why in (
        ("scale_attn_by_inverse_layer_idx", False, "it scales layer l's attention scores by 1/(l+1)"),
        ("scale_attn_weights", True, "gptlab always scales attention scores by 1/sqrt(head size)"),
        ("add_cross_attention", False, "gptlab is decoder-only"),
    ):
        if bool(d.get(field, ok)) != ok:
            _unsupported("gpt2", field, d.get(field), why)
    act = d.get("activation_function", "gelu_new")
    if act not in FROM_GPT2_ACT:
        _unsupported("gpt2", "activation_function", act, f"supported: {', '.join(FROM_GPT2_ACT)}")
    C = int(d["n_embd"])
    return dict(
        vocab_size=int(d["vocab_size"]), block_size=int(d["n_positions"]), n_layer=int(d["n_layer"]),
        n_head=int(d["n_head"]), n_kv_head=None, n_embd=C, dropout=float(d.get("resid_pdrop") or 0.0),
        bias=True, position="learned", norm="layernorm", norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
        mlp=FROM_GPT2_ACT[act], mlp_hidden=_mlp_hidden(d.get("n_inner") or 4 * C, 4 * C),
        tie_embeddings=bool(d.get("tie_word_embeddings", True)), window=None,
    )  # fmt: skip


def _from_llama(d: dict, model_type: str) -> dict:
    act = d.get("hidden_act", "silu")
    if act != "silu":
        _unsupported(model_type, "hidden_act", act, "gptlab's gated MLP is SwiGLU: silu")
    rope = d.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        _unsupported(
            model_type, "rope_scaling", rope_type, "gptlab's RoPE has no scaling: rope_type default only"
        )
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        _unsupported(
            model_type, "partial_rotary_factor", rope["partial_rotary_factor"], "RoPE rotates whole heads"
        )
    C, H = int(d["hidden_size"]), int(d["num_attention_heads"])
    head_dim = d.get("head_dim") or C // H
    if head_dim * H != C:
        _unsupported(
            model_type, "head_dim", head_dim, f"gptlab's head size is hidden_size / heads = {C / H:g}"
        )
    attn_bias, mlp_bias = bool(d.get("attention_bias", False)), bool(d.get("mlp_bias", False))
    if attn_bias != mlp_bias:
        _unsupported(model_type, "mlp_bias", mlp_bias, f"gptlab has biases everywhere or nowhere, and "
                     f"attention_bias={attn_bias}")  # fmt: skip
    kv = int(d.get("num_key_value_heads") or H)
    window = d.get("sliding_window") if model_type == "mistral" else None
    if window is not None and int(window) >= int(d["max_position_embeddings"]):
        window = None  # a window as long as the context is our default: block_size past it, none within
    return dict(
        vocab_size=int(d["vocab_size"]), block_size=int(d["max_position_embeddings"]),
        n_layer=int(d["num_hidden_layers"]), n_head=H, n_kv_head=None if kv == H else kv, n_embd=C,
        dropout=float(d.get("attention_dropout") or 0.0), bias=attn_bias, position="rope",
        rope_theta=float(rope.get("rope_theta", d.get("rope_theta") or 10000.0)), norm="rmsnorm",
        norm_eps=float(d.get("rms_norm_eps", 1e-6)), mlp="swiglu",
        mlp_hidden=_mlp_hidden(int(d["intermediate_size"]), swiglu_hidden(C)),
        tie_embeddings=bool(d.get("tie_word_embeddings", False)), window=None if window is None else int(window),
    )  # fmt: skip
