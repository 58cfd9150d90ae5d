"""FlexAttention path (attn_impl=flex / auto): equal to the explicit math for every position scheme, KV cache,
hooks, the score_mods against the schemes' own score biases, and the one-line errors.

On a CPU torch runs FlexAttention through its unfused reference implementation, forward only (no backward on
CPU), so gradients and the fused kernel are checked in tests/test_cuda.py.
"""

import warnings
from pathlib import Path

import pytest
import torch
from helpers import perturb
from helpers import tiny as shared_tiny

import gptlab.model.flex as flex
from gptlab.errors import UserError
from gptlab.model import POSITIONS, GPTConfig
from gptlab.model.positions import SCHEMES, PositionScheme

KV = {"mha": 4, "gqa": 2, "mqa": 1}
SCHEME_CASES = [*POSITIONS, "relative-keys-only"]  # Shaw keys without the value term can run fused


@pytest.fixture(autouse=True)
def _quiet_reference_warning():
    # torch warns that FlexAttention without torch.compile is unfused: that is what the CPU reference is
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


@pytest.fixture
def flex_calls(monkeypatch):
    """Counts the calls that reach torch's flex_attention (so a test knows the flex path really ran)."""
    calls = []
    original = flex.flex_attention

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(flex, "flex_attention", counted)
    return calls


def tiny(position="rope", n_kv_head=4, window=None, **kw):
    """helpers.tiny; "relative-keys-only" is Shaw's keys without the value term."""
    if position == "relative-keys-only":
        position, kw = "relative", {"rel_values": False, **kw}
    return shared_tiny(position, n_kv_head, window, **kw)


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("kv", list(KV))
@pytest.mark.parametrize("position", SCHEME_CASES)
def test_flex_matches_explicit(position, kv, window, flex_calls):
    m = perturb(tiny(position, KV[kv], window))
    idx = torch.randint(0, 37, (2, 12))
    with torch.no_grad():
        f, _ = m(idx, attn_impl="flex")
        e, _ = m(idx, attn_impl="explicit")
    torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-5)
    # every scheme runs flex except Shaw's value term, which needs the probabilities (explicit)
    assert len(flex_calls) == (0 if position == "relative" else m.config.n_layer)


@pytest.mark.parametrize("position", ["alibi", "t5", "relative-keys-only", "rope"])
def test_flex_over_several_kernel_blocks(position, flex_calls):
    """T = 200 spans two 128-wide blocks of the block mask; a window of 50 leaves whole blocks empty."""
    m = perturb(tiny(position, 2, window=50, block_size=256, n_layer=1))
    idx = torch.randint(0, 37, (1, 200))
    with torch.no_grad():
        f, _ = m(idx, attn_impl="flex")
        e, _ = m(idx, attn_impl="explicit")
    torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-5)
    assert flex_calls == [torch.Size([1, 4, 200, 8])]


@pytest.mark.parametrize("position", ["alibi", "t5", "relative-keys-only"])
def test_score_mod_equals_the_schemes_score_bias(position):
    """Each scheme's score_mod, evaluated on the whole (b, h, i, j) grid, adds exactly its score_bias where
    key j is visible to query i (j <= i), and stays in range (finite) on the masked entries."""
    m = perturb(tiny(position, n_layer=2, block_size=64))
    B, nh, T, hs = 2, 4, 40, 8
    q = torch.randn(B, nh, T, hs)
    p = torch.arange(T)
    b, h = torch.arange(B)[:, None, None, None], torch.arange(nh)[None, :, None, None]
    qi, kj = p[None, None, :, None], p[None, None, None, :]
    zero = torch.zeros(B, nh, T, T)
    for layer in range(2):
        with torch.no_grad():
            mod = m.pos.flex_score_mod(layer, q)(zero, b, h, qi, kj)  # (B, nh, T, T)
            bias = m.pos.score_bias(layer, q, p, p).expand(B, nh, T, T)
        visible = kj <= qi
        torch.testing.assert_close(mod.masked_select(visible), bias.masked_select(visible))
        assert torch.isfinite(mod).all()


def test_every_biased_scheme_has_a_score_mod():
    """The registry: a scheme with a score bias gives it to flex too; learned_bias marks the trained ones."""
    for name, cls in SCHEMES.items():
        has_bias = cls.score_bias is not PositionScheme.score_bias
        has_mod = cls.flex_score_mod is not PositionScheme.flex_score_mod
        assert has_bias == has_mod, name
        params = any(True for _ in cls(GPTConfig(position=name)).parameters())
        assert cls.learned_bias == (has_bias and params), name


@pytest.mark.parametrize("position", ["alibi", "t5", "relative-keys-only", "rope"])
def test_cache_equals_no_cache_with_flex(position, flex_calls):
    """Greedy decoding past block_size: flex for full forwards, sdpa for the cached one-token steps; the tokens
    equal the no-cache run (flex at every step) and the explicit model's."""
    window = 6 if position == "rope" else None
    m = perturb(tiny(position, 2, window, attn_impl="flex"))
    e = perturb(tiny(position, 2, window, attn_impl="explicit"))
    e.load_state_dict(m.state_dict())
    idx = torch.randint(0, 37, (2, 5))
    cached = m.generate(idx, 20, temperature=0, use_cache=True)
    assert len(flex_calls) == m.config.n_layer  # only the prompt went through flex
    plain = m.generate(idx, 20, temperature=0, use_cache=False)
    assert len(flex_calls) == m.config.n_layer * 21
    assert torch.equal(cached, plain)
    assert torch.equal(cached, e.generate(idx, 20, temperature=0, use_cache=True))


def test_hook_points_fire_on_the_flex_path(flex_calls):
    m = perturb(tiny("alibi", 2))
    idx = torch.randint(0, 37, (2, 10))
    names = [f"blocks.1.attn.hook_{n}" for n in ("q", "k", "v", "z")]
    with torch.no_grad():  # (no FlexAttention backward on a CPU)
        _, got = m.run_with_cache(idx, names, attn_impl="flex")
        _, ref = m.run_with_cache(idx, names, attn_impl="explicit")
    assert flex_calls and set(got) == set(names)
    for n in names:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-5)

    # a hook that replaces its activation (zero-ablating head 1) acts on the flex path as on the explicit one
    def ablate(module, inp, z):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with torch.no_grad():  # (no FlexAttention backward on a CPU)
        fa, _ = m.run_with_hooks(idx, [("blocks.0.attn.hook_z", ablate)], attn_impl="flex")
        ea, _ = m.run_with_hooks(idx, [("blocks.0.attn.hook_z", ablate)], attn_impl="explicit")
    torch.testing.assert_close(fa, ea, rtol=1e-5, atol=1e-5)
    # patterns exist only on the explicit path: asking for one picks it, whatever the model was built with
    _, pat = tiny("alibi", attn_impl="flex").run_with_cache(idx, ["blocks.0.attn.hook_pattern"])
    assert pat["blocks.0.attn.hook_pattern"].shape == (2, 4, 10, 10)


def test_auto_is_sdpa_on_cpu(flex_calls):
    """auto picks flex only on CUDA: on a CPU it is exactly sdpa, for every scheme, with and without a window."""
    assert GPTConfig().attn_impl == "auto"
    for position in POSITIONS:
        m = perturb(tiny(position, 2, window=3))
        idx = torch.randint(0, 37, (2, 12))
        with torch.no_grad():
            a, _ = m(idx)
            s, _ = m(idx, attn_impl="sdpa")
        assert torch.equal(a, s), position
    assert flex_calls == []


def test_auto_choice_on_cuda():
    """flex_is_best (decided without a GPU: it reads the device type only)."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    best = flex.flex_is_best
    assert best(cuda, 64, has_bias=True, windowed=False, needs_grad=True, learned_bias=False)
    assert best(cuda, 64, has_bias=False, windowed=True, needs_grad=True, learned_bias=False)
    assert not best(
        cuda, 64, has_bias=False, windowed=False, needs_grad=True, learned_bias=False
    )  # rope: sdpa
    assert not best(cpu, 4096, has_bias=True, windowed=True, needs_grad=False, learned_bias=False)
    # inference: short calls (a sampling prompt) stay on sdpa, long ones take flex
    assert not best(cuda, 100, has_bias=True, windowed=False, needs_grad=False, learned_bias=False)
    assert best(
        cuda, flex.FLEX_MIN_INFERENCE_T, has_bias=True, windowed=False, needs_grad=False, learned_bias=False
    )


def test_training_with_flex_off_cuda_is_one_line():
    m = tiny("alibi", attn_impl="flex").train()
    idx = torch.randint(0, 37, (2, 8))
    with pytest.raises(UserError, match="cannot train on cpu"):
        m(idx, idx)
    with torch.no_grad():  # the forward alone works
        m(idx, idx)


def test_missing_torch_features_are_one_line(monkeypatch):
    monkeypatch.setattr(flex, "LEARNED_BIAS_GRAD", False)  # as on torch 2.5
    cuda = torch.device("cuda")
    with pytest.raises(UserError, match=r"position=t5 .* need torch >= 2.6"):
        flex.check_flex(cuda, needs_grad=True, learned_bias=True, position="t5", dropout=False)
    flex.check_flex(cuda, needs_grad=True, learned_bias=False, position="alibi", dropout=False)
    flex.check_flex(cuda, needs_grad=False, learned_bias=True, position="t5", dropout=False)
    # auto falls back to sdpa there instead of failing
    assert not flex.flex_is_best(cuda, 64, has_bias=True, windowed=False, needs_grad=True, learned_bias=True)
    with pytest.raises(UserError, match="no dropout"):
        flex.check_flex(cuda, needs_grad=True, learned_bias=False, position="alibi", dropout=True)


def test_flex_with_dropout_is_refused_by_the_config():
    with pytest.raises(UserError, match="attn_impl=flex has no dropout"):
        GPTConfig(attn_impl="flex", dropout=0.1)
    GPTConfig(attn_impl="auto", dropout=0.1)  # auto trains with sdpa while dropout is on


def test_block_masks_are_built_once_per_shape_and_skip_what_the_window_hides():
    flex._cached_block_mask.cache_clear()
    cpu = torch.device("cpu")
    a = flex.block_mask(300, None, cpu)
    assert flex.block_mask(300, None, cpu) is a and flex.block_mask(300, 50, cpu) is not a
    # (q block, kv block) of 128 x 128 entries that hold any visible key: causal is lower triangular; a window
    # of 50 also leaves out block (2, 0) (queries 256.. never see keys ..127), which the kernel then skips
    assert a.to_dense()[0, 0].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert flex.block_mask(300, 50, cpu).to_dense()[0, 0].tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]


def test_train_py_refuses_flex_on_a_cpu_before_writing_anything(tmp_path):
    from hydra import compose, initialize_config_dir

    from gptlab.training.loop import train

    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["model.attn_impl=flex", "train.device=cpu", "train.max_iters=1"])
    with pytest.raises(UserError, match="cannot train on cpu"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
