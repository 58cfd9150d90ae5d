"""Head ablations: the hook touches exactly one head's slice, and the importance numbers match full reruns."""

import pytest
import torch

from gptlab.interp.ablation import ablation_importance, head_ablation_hook, head_means
from gptlab.model import GPT, GPTConfig


def _model(**kw):
    cfg = dict(vocab_size=40, block_size=24, n_layer=2, n_head=4, n_embd=32, position="rope")
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def _batches(n=2, B=3, T=24, V=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, V, (B, T + 1), generator=g)
        out.append((x[:, :-1], x[:, 1:]))
    return out


@pytest.mark.parametrize("n_kv_head", [None, 2])
def test_zero_ablation_changes_exactly_that_head(n_kv_head):
    m = _model(n_kv_head=n_kv_head)
    x, _ = _batches(1)[0]
    l, h = 1, 2
    names = [
        f"blocks.{l}.hook_resid_pre",
        f"blocks.{l}.attn.hook_q",
        f"blocks.{l}.attn.hook_k",
        f"blocks.{l}.attn.hook_v",
        f"blocks.{l}.attn.hook_z",
        f"blocks.{l}.hook_attn_out",
        f"blocks.{l - 1}.hook_resid_post",
    ]
    _, clean = m.run_with_cache(x, names=names)
    seen = {}

    def grab(name):
        def fn(module, inp, out):
            seen[name] = out.detach().clone()

        return fn

    hooks = [(f"blocks.{l}.attn.hook_z", head_ablation_hook(h, "zero"))]  # runs first, then the recorders
    hooks += [(n, grab(n)) for n in names]
    m.run_with_hooks(x, hooks)
    z0, z1 = clean[f"blocks.{l}.attn.hook_z"], seen[f"blocks.{l}.attn.hook_z"]  # (B, T, nh, hs)
    assert torch.all(z1[:, :, h] == 0) and z0[:, :, h].abs().sum() > 0
    others = [i for i in range(4) if i != h]
    assert torch.equal(z1[:, :, others], z0[:, :, others])
    for n in names[:4] + names[6:]:  # everything upstream of hook_z in that layer is untouched
        assert torch.equal(seen[n], clean[n]), n
    # the layer's output changes by exactly the ablated head's share of the output projection
    o = m.blocks[l].attn.o_proj.weight  # (C, nh*hs)
    hs = z0.shape[-1]
    expected = clean[f"blocks.{l}.hook_attn_out"] - z0[:, :, h] @ o[:, h * hs : (h + 1) * hs].T
    torch.testing.assert_close(seen[f"blocks.{l}.hook_attn_out"], expected, rtol=1e-5, atol=1e-5)


def test_mean_ablation_writes_the_mean():
    m = _model()
    batches = _batches(2)
    means = head_means(m, batches)  # (L, nh, hs)
    zs = [m.run_with_cache(x, names=["blocks.0.attn.hook_z"])[1]["blocks.0.attn.hook_z"] for x, _ in batches]
    ref = torch.cat([z.reshape(-1, 4, z.shape[-1]) for z in zs]).mean(0)  # (nh, hs)
    torch.testing.assert_close(means[0], ref, rtol=1e-5, atol=1e-6)
    seen = {}
    hook = head_ablation_hook(1, "mean", means[0, 1])
    m.run_with_hooks(
        batches[0][0],
        [("blocks.0.attn.hook_z", hook), ("blocks.0.attn.hook_z", lambda mod, i, o: seen.setdefault("z", o))],
    )
    assert torch.allclose(seen["z"][:, :, 1], means[0, 1].expand_as(seen["z"][:, :, 1]))


@pytest.mark.parametrize("position, n_batches", [("rope", 2), ("learned", 1)])
def test_importance_matches_full_forward_reruns(position, n_batches):
    m = _model(position=position, n_kv_head=2)
    batches = _batches(n_batches)
    res = ablation_importance(m, batches)
    means = head_means(m, batches)

    def mean_loss(hooks):
        return sum(m.run_with_hooks(x, hooks, targets=y)[1].item() for x, y in batches) / n_batches

    clean = mean_loss([])
    assert res["clean"].item() == pytest.approx(clean, rel=1e-5)
    for mode in ("zero", "mean"):
        for l in range(2):
            for h in range(4):
                hook = head_ablation_hook(h, mode, means[l, h] if mode == "mean" else None)
                loss = mean_loss([(f"blocks.{l}.attn.hook_z", hook)])
                assert res[mode][l, h].item() == pytest.approx(loss - clean, abs=2e-5), (mode, l, h)


def test_ablation_hook_rejects_bad_mode():
    with pytest.raises(ValueError):
        head_ablation_hook(0, "resample")


def test_chunked_stacking_gives_the_same_numbers(monkeypatch):
    import gptlab.interp.ablation as A

    m = _model(n_kv_head=1)
    batches = _batches(1)
    full = A.ablation_importance(m, batches)
    monkeypatch.setattr(A, "MAX_LOGITS", 1)  # one head per forward
    one = A.ablation_importance(m, batches)
    for mode in ("zero", "mean"):
        torch.testing.assert_close(one[mode], full[mode], rtol=1e-4, atol=1e-5)


def test_one_hook_ablates_several_heads_of_a_layer():
    """head_ablation_hook([h, ...]) zeroes exactly those heads' slices; ablation_hooks groups pairs by layer."""
    from gptlab.interp.ablation import ablation_hooks

    z = torch.randn(2, 5, 4, 3)
    before = z.clone()
    out = head_ablation_hook([0, 2])(None, None, z)
    assert (out[:, :, [0, 2]] == 0).all() and torch.equal(out[:, :, [1, 3]], z[:, :, [1, 3]])
    assert torch.equal(z, before)  # the input is left as it was
    names = [name for name, _ in ablation_hooks([(1, 2), (0, 1), (1, 0)])]
    assert names == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    hook = dict(ablation_hooks([(1, 2), (1, 0)]))["blocks.1.attn.hook_z"]
    assert (hook(None, None, z)[:, :, [0, 2]] == 0).all() and torch.equal(
        hook(None, None, z)[:, :, 1], z[:, :, 1]
    )
