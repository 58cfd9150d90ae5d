"""Our logits equal Hugging Face transformers' given the same weights (tiny random-init models, no download)."""

import pytest
import torch

from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")


def test_matches_hf_gpt2():
    """learned positions, MHA, layernorm with biases, exact-GELU MLP, tied embeddings."""
    V, T, C, L, H = 97, 24, 48, 2, 4
    hf_cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H, activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():  # give every parameter non-trivial values (HF init zeroes biases, ones LN)
        for p in hf.parameters():
            p.normal_(0, 0.2)
    cfg = GPTConfig(
        vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, position="learned", bias=True,
        norm="layernorm", mlp="gelu", tie_embeddings=True, attn_impl="sdpa",
    )  # fmt: skip
    m = GPT(cfg).eval()
    sd = hf.state_dict()
    with torch.no_grad():
        m.tok_emb.weight.copy_(sd["transformer.wte.weight"])
        m.pos.emb.weight.copy_(sd["transformer.wpe.weight"])
        for l, blk in enumerate(m.blocks):
            p = f"transformer.h.{l}."
            blk.ln_1.weight.copy_(sd[p + "ln_1.weight"])
            blk.ln_1.bias.copy_(sd[p + "ln_1.bias"])
            blk.ln_2.weight.copy_(sd[p + "ln_2.weight"])
            blk.ln_2.bias.copy_(sd[p + "ln_2.bias"])
            # HF Conv1D stores (in, out); nn.Linear wants (out, in)
            wq, wk, wv = sd[p + "attn.c_attn.weight"].t().split(C, dim=0)
            bq, bk, bv = sd[p + "attn.c_attn.bias"].split(C)
            for lin, w, b in (
                (blk.attn.q_proj, wq, bq),
                (blk.attn.k_proj, wk, bk),
                (blk.attn.v_proj, wv, bv),
            ):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            blk.attn.o_proj.weight.copy_(sd[p + "attn.c_proj.weight"].t())
            blk.attn.o_proj.bias.copy_(sd[p + "attn.c_proj.bias"])
            blk.mlp.fc.weight.copy_(sd[p + "mlp.c_fc.weight"].t())
            blk.mlp.fc.bias.copy_(sd[p + "mlp.c_fc.bias"])
            blk.mlp.proj.weight.copy_(sd[p + "mlp.c_proj.weight"].t())
            blk.mlp.proj.bias.copy_(sd[p + "mlp.c_proj.bias"])
        m.ln_f.weight.copy_(sd["transformer.ln_f.weight"])
        m.ln_f.bias.copy_(sd["transformer.ln_f.bias"])
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
    hf_cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=KV, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )  # fmt: skip
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    cfg = GPTConfig(
        vocab_size=V, block_size=T, n_layer=L, n_head=H, n_kv_head=KV, n_embd=C, position="rope",
        rope_theta=500.0, bias=False, norm="rmsnorm", norm_eps=1e-5, mlp="swiglu", mlp_hidden=F,
        tie_embeddings=False,
    )  # fmt: skip
    m = GPT(cfg).eval()
    sd = hf.state_dict()
    with torch.no_grad():
        m.tok_emb.weight.copy_(sd["model.embed_tokens.weight"])
        for l, blk in enumerate(m.blocks):
            p = f"model.layers.{l}."
            blk.ln_1.weight.copy_(sd[p + "input_layernorm.weight"])
            blk.ln_2.weight.copy_(sd[p + "post_attention_layernorm.weight"])
            blk.attn.q_proj.weight.copy_(sd[p + "self_attn.q_proj.weight"])
            blk.attn.k_proj.weight.copy_(sd[p + "self_attn.k_proj.weight"])
            blk.attn.v_proj.weight.copy_(sd[p + "self_attn.v_proj.weight"])
            blk.attn.o_proj.weight.copy_(sd[p + "self_attn.o_proj.weight"])
            blk.mlp.gate.weight.copy_(sd[p + "mlp.gate_proj.weight"])
            blk.mlp.up.weight.copy_(sd[p + "mlp.up_proj.weight"])
            blk.mlp.proj.weight.copy_(sd[p + "mlp.down_proj.weight"])
        m.ln_f.weight.copy_(sd["model.norm.weight"])
        m.lm_head.weight.copy_(sd["lm_head.weight"])
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
        hf_gen = hf.generate(idx[:, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(ours_gen, hf_gen)
