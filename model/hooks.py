"""Hook points: named identity layers where activations can be read or replaced (TransformerLens style)."""

from __future__ import annotations

from torch import nn


class HookPoint(nn.Identity):
    """An identity module placed on an activation.

    Its name in ``model.named_modules()`` (e.g. ``blocks.0.attn.hook_z``) is the activation's name. A PyTorch
    forward hook registered on it sees ``output`` (the activation) and may return a replacement tensor.
    """

    def extra_repr(self) -> str:
        return "hook point"
