"""Ablation importance: how much the val loss rises when one head's output is removed.

A head is ablated with a forward hook on `blocks.{l}.attn.hook_z` (each head's output before the output
projection, `(B, T, n_head, hs)`) that replaces the head's slice with zeros (zero ablation) or with its mean
over the evaluation tokens (mean ablation). The importance is `loss(ablated) - loss(clean)` on the same fixed
val batches.

Speed: the layers before the ablated one are not affected, so their residual stream is computed once per batch
and each ablation only reruns blocks l..L-1 (checked against a full forward; if the model's forward does
something this shortcut does not reproduce, every ablation runs the full model instead). The heads of a
layer are ablated together in one forward over stacked copies of the batch, copy h with head h ablated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

MODES = ("zero", "mean")
MAX_LOGITS = 2**26  # logits elements per stacked forward (256 MB in float32)


def head_ablation_hook(
    head: int | Sequence[int], mode: str = "zero", mean: torch.Tensor | None = None
) -> Callable:
    """A forward hook for `hook_z` that replaces the output of head `head` (or of each head of a list) with 0,
    or with `mean` `(hs,)`."""
    if mode not in MODES:
        raise ValueError(f"ablation mode {mode!r} is not one of {MODES}")
    if mode == "mean" and mean is None:
        raise ValueError("mean ablation needs the head's mean output")
    heads = head if isinstance(head, int) else list(head)

    def hook(module, inputs, z):  # z (B, T, n_head, hs)
        z = z.clone()
        z[:, :, heads] = 0.0 if mode == "zero" else mean.to(z.dtype)
        return z

    return hook


def ablation_hooks(ablate: Sequence[tuple[int, int]]) -> list[tuple[str, Callable]]:
    """(hook name, hook) pairs that zero-ablate every (layer, head) of `ablate`, one hook per layer."""
    by_layer: dict[int, list[int]] = {}
    for l, h in ablate:
        by_layer.setdefault(int(l), []).append(int(h))
    return [(f"blocks.{l}.attn.hook_z", head_ablation_hook(heads)) for l, heads in sorted(by_layer.items())]


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


class _LayerRunner:
    """Runs the model from the residual stream before block `l` to the logits, reusing earlier layers."""

    def __init__(self, model, x: torch.Tensor):
        self.model = model
        L = len(model.blocks)
        names = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
        z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
        logits, cache = model.run_with_cache(x, names=names + z_names)
        self.resid = [cache[n] for n in names]  # each (B, T, C)
        self.z_sum = torch.stack([cache[n].float().sum(dim=(0, 1)) for n in z_names])  # (L, nh, hs)
        self.full_logits = logits
        self.x = x
        # the shortcut reruns blocks[l:], ln_f and unembed: check that on the last block against the real forward
        self.shortcut = torch.allclose(self._from_layer(L - 1, 1), logits, atol=1e-4, rtol=1e-4)

    def _from_layer(self, l: int, copies: int) -> torch.Tensor:
        m = self.model
        h = self.resid[l].repeat(copies, 1, 1)  # (copies * B, T, C)
        for block in m.blocks[l:]:
            h = block(h, m.pos)
        return m.unembed(m.ln_f(h))  # (copies * B, T, vocab)

    def logits(self, l: int, copies: int = 1) -> torch.Tensor:
        """Logits of `copies` stacked copies of the batch, run from layer `l` (hooks apply as registered)."""
        if self.shortcut:
            return self._from_layer(l, copies)
        return self.model(self.x.repeat(copies, 1))[0]


def _stacked_hook(mode: str, heads: Sequence[int], B: int, means: torch.Tensor | None) -> Callable:
    """hook_z hook for `len(heads)` stacked copies of a batch: copy c ablates head `heads[c]`."""

    def hook(module, inputs, z):  # z (copies * B, T, n_head, hs)
        z = z.clone()
        for c, h in enumerate(heads):
            z[c * B : (c + 1) * B, :, h] = 0.0 if mode == "zero" else means[h].to(z.dtype)
        return z

    return hook


def head_means(model, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean of every head's `hook_z` output over all tokens of `batches`: `(n_layer, n_head, hs)`."""
    L = len(model.blocks)
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    total, count = None, 0
    for x, _ in batches:
        _, cache = model.run_with_cache(x, names=names)
        s = torch.stack([cache[n].float().sum(dim=(0, 1)) for n in names])  # (L, nh, hs)
        total = s if total is None else total + s
        count += x.numel()
    return total / count


@torch.inference_mode()
def ablation_importance(
    model,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    modes: Sequence[str] = MODES,
) -> dict[str, torch.Tensor]:
    """Val-loss increase per head for each ablation mode: `{mode: (n_layer, n_head)}`, plus `"clean"` loss.

    `batches` is a fixed list of `(x, y)` val batches; the loss is their mean cross-entropy.
    """
    was_training = model.training
    model.eval()
    L = len(model.blocks)
    nh = model.blocks[0].attn.n_head
    runners = [_LayerRunner(model, x) for x, _ in batches]  # one clean forward per batch, cached
    means = sum(r.z_sum for r in runners) / sum(x.numel() for x, _ in batches)  # (L, nh, hs)
    out = {mode: torch.zeros(L, nh) for mode in modes}
    clean = 0.0
    for runner, (x, y) in zip(runners, batches):
        base = _loss(runner.full_logits, y).item()
        clean += base / len(batches)
        B = x.shape[0]
        V = runner.full_logits.shape[-1]
        per_call = max(1, min(nh, MAX_LOGITS // max(1, x.numel() * V)))  # bound the stacked logits' memory
        for l in range(L):
            hp = model.blocks[l].attn.hook_z
            for mode in modes:
                for h0 in range(0, nh, per_call):
                    heads = range(h0, min(nh, h0 + per_call))
                    # copy c of the batch has head heads[c] ablated: one forward for several heads
                    hook = _stacked_hook(mode, heads, B, means[l])
                    handle = hp.register_forward_hook(hook)
                    try:
                        logits = runner.logits(l, len(heads))  # (len(heads) * B, T, V)
                    finally:
                        handle.remove()
                    for c, h in enumerate(heads):
                        loss = _loss(logits[c * B : (c + 1) * B], y).item()
                        out[mode][l, h] += (loss - base) / len(batches)
    model.train(was_training)
    return {**out, "clean": torch.tensor(clean)}
