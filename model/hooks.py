"""Hook points: named identity layers where activations can be read or replaced (TransformerLens style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module


class HookPoint(nn.Identity):
    """An identity module placed on an activation.

    Its name in ``model.named_modules()`` (e.g. ``blocks.0.attn.hook_z``) is the activation's name. A PyTorch
    forward hook registered on it sees ``output`` (the activation) and may return a replacement tensor.

    With no hook of any kind registered (on it or module-wide) a call returns its input at once, skipping
    ``nn.Module.__call__``: a model has ~20 hook points per layer, and that dispatch is a visible part of a
    one-token decode step. Any registered hook takes the ordinary path, so hooks fire exactly as before.
    """

    def __call__(self, x: Tensor, *args, **kwargs):
        if (
            args
            or kwargs
            or self._forward_hooks
            or self._forward_pre_hooks
            or self._backward_hooks
            or self._backward_pre_hooks
            or _module._global_forward_hooks  # module-wide hooks (register_module_forward_hook etc.)
            or _module._global_forward_pre_hooks
            or _module._global_backward_hooks
            or _module._global_backward_pre_hooks
            or torch.compiler.is_compiling()
        ):
            return super().__call__(x, *args, **kwargs)
        return x

    def extra_repr(self) -> str:
        return "hook point"
