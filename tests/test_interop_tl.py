"""TransformerLens (4.x TransformerBridge) sees our models exactly: logits, attention patterns, head outputs.

One learned / LayerNorm / GELU model and one RoPE / RMSNorm / SwiGLU / GQA model, random weights built here;
the reference is TransformerLens's own forward pass and its hook points.
"""

import pytest
import torch

from gptlab.model import GPT, GPTConfig

pytest.importorskip("transformers")
tl = pytest.importorskip("transformer_lens")
if not hasattr(tl, "TransformerBridge"):  # pragma: no cover - the hf extra pins 4.x
    pytest.skip("transformer-lens 4.x (TransformerBridge) required", allow_module_level=True)

from gptlab.interop.tl import to_transformer_lens  # noqa: E402

MODELS = {
    "learned-layernorm-gelu": dict(position="learned", norm="layernorm", mlp="gelu", bias=True),
    "rope-rmsnorm-swiglu-gqa": dict(
        position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, rope_theta=500.0
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_transformer_lens_logits_patterns_and_head_outputs_equal_ours(name):
    cfg = GPTConfig(vocab_size=71, block_size=32, n_layer=2, n_head=4, n_embd=32, **MODELS[name])
    ours = GPT(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    bridge = to_transformer_lens(ours)
    idx = torch.randint(0, cfg.vocab_size, (2, 24))
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(idx)
        want, mine = ours.run_with_cache(idx)
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(cfg.n_layer)])
    assert patterns.shape == (cfg.n_layer, 2, cfg.n_head, 24, 24)  # one pattern per query head, GQA included
    torch.testing.assert_close(patterns, ours.attention_patterns(idx), rtol=1e-5, atol=1e-6)
    for l in range(cfg.n_layer):  # each head's output before the output projection, and the residual stream
        torch.testing.assert_close(
            cache[f"blocks.{l}.attn.hook_z"], mine[f"blocks.{l}.attn.hook_z"], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            cache[f"blocks.{l}.hook_resid_post"], mine[f"blocks.{l}.hook_resid_post"], rtol=1e-5, atol=1e-5
        )


def test_zero_ablating_a_head_in_transformer_lens_equals_ours():
    cfg = GPTConfig(
        vocab_size=71, block_size=32, n_layer=2, n_head=4, n_embd=32, **MODELS["learned-layernorm-gelu"]
    )
    ours = GPT(cfg).eval()
    bridge = to_transformer_lens(ours)
    idx = torch.randint(0, cfg.vocab_size, (1, 16))

    def ablate(z, hook=None):  # TransformerLens passes (tensor, hook); ours (module, input, output)
        z = z.clone()
        z[:, :, 2] = 0
        return z

    with torch.no_grad():
        theirs = bridge.run_with_hooks(idx, fwd_hooks=[("blocks.1.attn.hook_z", ablate)])
        mine, _ = ours.run_with_hooks(idx, [("blocks.1.attn.hook_z", lambda m, i, o: ablate(o))])
    torch.testing.assert_close(theirs, mine, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mine, ours(idx)[0], atol=1e-4)  # the ablation did something


def test_compatibility_mode_keeps_the_patterns_and_shifts_each_positions_logits():
    """HookedTransformer's processing (fold LayerNorm, centre weights and unembedding), as docs/interop.md says."""
    cfg = GPTConfig(
        vocab_size=71, block_size=32, n_layer=2, n_head=4, n_embd=32, **MODELS["learned-layernorm-gelu"]
    )
    ours = GPT(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    bridge = to_transformer_lens(ours)
    bridge.enable_compatibility_mode()
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(idx)
        gap = logits - ours(idx)[0]
    patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(cfg.n_layer)])
    torch.testing.assert_close(patterns, ours.attention_patterns(idx), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gap, gap.mean(-1, keepdim=True).expand_as(gap), rtol=1e-4, atol=1e-4)


CHARS = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHAR_META = {"tokenizer": "char", "chars": CHARS, "vocab_size": len(CHARS), "eot_id": None}
GPT2_META = {"tokenizer": "gpt2", "vocab_size": 50257, "eot_id": 50256}
TEXT = "ROMEO: good morrow"


def _string_input_equals_ours(bridge, ours, meta, bos):
    """run_with_cache on a string: the ids are our tokenizer's (after ``bos``, if any) and the logits ours."""
    from gptlab.data import get_tokenizer

    ids = bridge.to_tokens(TEXT)
    assert ids.tolist() == [[*bos, *get_tokenizer(meta).encode(TEXT)]]
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(TEXT)
        want = ours(ids)[0]
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    assert cache["blocks.0.attn.hook_pattern"].shape[-1] == ids.shape[1]


def test_a_char_run_reads_strings_without_a_bos_it_lacks(tmp_path):
    """A char vocabulary has no BOS: TransformerLens used to prepend a new id (= vocab size) and fail."""
    cfg = GPTConfig(vocab_size=len(CHARS), block_size=32, n_layer=2, n_head=4, n_embd=32, **MODELS["rope-rmsnorm-swiglu-gqa"])  # fmt: skip
    ours = GPT(cfg).eval()
    bridge = to_transformer_lens(ours, CHAR_META)
    _string_input_equals_ours(bridge, ours, CHAR_META, bos=[])
    # strings of different lengths pad with an id the model has; the shorter one's logits are its own
    with torch.no_grad():
        both = bridge(["ROMEO: good morrow", "JULIET"])
        alone = ours(bridge.to_tokens("JULIET"))[0]
    torch.testing.assert_close(both[1:, :6], alone, rtol=1e-5, atol=1e-5)
    # an export booted from its files as docs/interop.md says reads strings the same way
    from gptlab.interop.hf import Run, export_hf
    from gptlab.interop.tl import fit_special_tokens

    export_hf(Run(ours, None, CHAR_META, {}, {}, tmp_path / "c.pt", tmp_path, 0), tmp_path / "out")
    booted = fit_special_tokens(tl.TransformerBridge.boot_transformers(str(tmp_path / "out"), device="cpu"))
    _string_input_equals_ours(booted, ours, CHAR_META, bos=[])


def test_a_gpt2_tokenizer_run_reads_strings_after_its_end_of_text_token():
    cfg = GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=16, **MODELS["learned-layernorm-gelu"])  # fmt: skip
    ours = GPT(cfg).eval()
    bridge = to_transformer_lens(ours, GPT2_META)
    _string_input_equals_ours(bridge, ours, GPT2_META, bos=[50256])
