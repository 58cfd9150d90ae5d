"""Our logits equal Hugging Face transformers' given the same weights (tiny random-init models, no download).

The weights go through interop's mapping (config and state dict); the reference is HF's own forward pass.
"""

import pytest
import torch

from gptlab.interop.hf_config import from_hf_config
from gptlab.interop.hf_weights import from_hf
from gptlab.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")


def noised(hf):
    """HF init zeroes biases and sets norms to 1: give every parameter non-trivial values."""
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    return hf.eval()


def ours_from(hf) -> GPT:
    family, values = from_hf_config(hf.config.to_dict())
    cfg = GPTConfig(**values)
    m = GPT(cfg).eval()
    m.load_state_dict(from_hf(family, cfg, hf.state_dict()))
    return m


@pytest.mark.parametrize(
    "act, mlp",
    [("gelu", "gelu"), ("gelu_new", "gelu_tanh"), ("relu2", "relu2")],
    ids=["gelu", "gelu_new", "relu2"],
)
def test_matches_hf_gpt2(act, mlp):
    """learned positions, MHA, layernorm with biases, GPT-2's MLP activations, tied embeddings."""
    V, T, C, L, H = 97, 24, 48, 2, 4
    hf = noised(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H, activation_function=act,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
    )))  # fmt: skip
    m = ours_from(hf)
    c = m.config
    assert (c.position, c.norm, c.mlp, c.bias, c.tie_embeddings, c.block_size) == (
        "learned",
        "layernorm",
        mlp,
        True,
        True,
        T,
    )
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        ref = hf(idx).logits
        for impl in ("sdpa", "explicit"):
            ours, _ = m(idx, attn_impl=impl)
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    # and the tied lm_head is the embedding matrix, as in GPT-2
    assert m.lm_head.weight.data_ptr() == m.tok_emb.weight.data_ptr()


def test_matches_hf_llama():
    """rope (half-split), GQA, RMSNorm, SwiGLU, no biases, untied head."""
    V, T, C, L, H, KV, F = 101, 20, 64, 2, 8, 2, 96
    hf = noised(transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=KV, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )))  # fmt: skip
    m = ours_from(hf)
    c = m.config
    assert (c.position, c.rope_theta, c.norm, c.mlp, c.mlp_hidden, c.n_kv_head, c.tie_embeddings) == (
        "rope",
        500.0,
        "rmsnorm",
        "swiglu",
        F,
        KV,
        False,
    )
    # K/V projections really are n_kv_head wide, as in Llama
    assert m.blocks[0].attn.k_proj.weight.shape == (KV * C // H, C)
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        ref = hf(idx).logits
        for impl in ("sdpa", "explicit"):
            ours, _ = m(idx, attn_impl=impl)
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
        # cached greedy generation follows HF's own greedy decoding
        ours_gen = m.generate(idx[:, :5], 8, temperature=0)
        hf_gen = hf.generate(idx[:, :5], max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours_gen, hf_gen)


def test_matches_hf_mistral_sliding_window():
    """Mistral = Llama with a sliding window: each query sees itself and the window - 1 keys before it."""
    V, T, C, L, H, KV, W = 89, 24, 32, 2, 4, 1, 5
    hf = noised(transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=V, hidden_size=C, intermediate_size=48, num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=KV, max_position_embeddings=64, sliding_window=W, tie_word_embeddings=True,
    )))  # fmt: skip
    m = ours_from(hf)
    assert (m.config.window, m.config.n_kv_head, m.config.tie_embeddings) == (W, KV, True)
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        ref = hf(idx).logits
        for impl in ("sdpa", "explicit"):
            torch.testing.assert_close(m(idx, attn_impl=impl)[0], ref, rtol=1e-4, atol=1e-4)
