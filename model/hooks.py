"""Hook points: named identity layers where activations can be read or replaced (TransformerLens style)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class HookPoint(nn.Module):
    """An identity module placed on an activation.

    Its name in ``model.named_modules()`` (e.g. ``blocks.0.attn.hook_z``) is the activation's name. A forward
    hook registered on it (``register_forward_hook``) sees ``output`` (the activation) and may return a
    replacement tensor; pre-hooks and full backward hooks work as on any module.

    A model has ~20 hook points per layer, and ``nn.Module.__call__``'s dispatch is a visible part of a
    one-token decode step. So a hook point counts the hooks registered on it and, with none, returns its input
    at once. Hooks registered module-wide (``torch.nn.modules.module.register_module_forward_hook``) are not
    seen by hook points: register on the point itself, as TransformerLens does.
    """

    def __init__(self):
        super().__init__()
        self.n_hooks = 0

    def forward(self, x: Tensor) -> Tensor:
        return x

    def __call__(self, x: Tensor) -> Tensor:
        return super().__call__(x) if self.n_hooks else x

    def _counted(self, handle: RemovableHandle) -> _CountedHandle:
        self.n_hooks += 1
        return _CountedHandle(handle, self)

    def register_forward_hook(self, hook, *args, **kwargs):
        return self._counted(super().register_forward_hook(hook, *args, **kwargs))

    def register_forward_pre_hook(self, hook, *args, **kwargs):
        return self._counted(super().register_forward_pre_hook(hook, *args, **kwargs))

    def register_full_backward_hook(self, hook, *args, **kwargs):
        return self._counted(super().register_full_backward_hook(hook, *args, **kwargs))

    def register_full_backward_pre_hook(self, hook, *args, **kwargs):
        return self._counted(super().register_full_backward_pre_hook(hook, *args, **kwargs))

    def extra_repr(self) -> str:
        return f"hook point, {self.n_hooks} hook(s)"


class _CountedHandle:
    """A hook's removable handle that also lowers its hook point's count (once, however often removed)."""

    def __init__(self, handle: RemovableHandle, point: HookPoint):
        self.handle: RemovableHandle | None = handle
        self.point = point

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
            self.point.n_hooks -= 1

    def __enter__(self) -> _CountedHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
