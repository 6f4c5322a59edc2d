"""Capture: run a model with forward hooks on named submodules and keep their inputs and outputs.

:func:`captured` is a context manager: the hooks are on the model only inside it, and removed
however the run ends. :func:`eager_attention` switches Hugging Face attention to its eager kernel
(the only one that returns the attention probabilities) for a run and back.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ...paper.checks import fail

__all__ = ["Captured", "captured", "cols", "softmax_cols"]


class Captured:
    """What the hooks kept: ``get(path, "in" | "out", item)`` as float64 numpy, or ``None``."""

    def __init__(self):
        self.raw: dict[tuple[str, str], object] = {}

    def get(self, path, which="out", item=0):
        value = self.raw.get((path, which))
        if isinstance(value, tuple | list):
            value = value[item] if item < len(value) else None
        elif item:
            value = None
        if not isinstance(value, torch.Tensor):
            return None
        return value.detach().to(torch.float64).cpu().numpy()


@contextlib.contextmanager
def captured(model, watch: dict, kwargs_hooks: dict | None = None):
    """Hooks on ``model``'s submodules ``watch`` (path → also keep its first tensor input?);
    ``kwargs_hooks`` (path → f(kwargs) → kwargs) change a call's keyword arguments. Yields a
    :class:`Captured`; the run happens inside, under ``torch.no_grad()``."""
    store, handles = Captured(), []
    kwargs_hooks = kwargs_hooks or {}
    try:
        for path in sorted(set(watch) | set(kwargs_hooks)):
            try:
                module = model.get_submodule(path)
            except AttributeError:
                fail(
                    "compare",
                    "model",
                    f"has no submodule {path!r}, which the table of its "
                    "family reads: a model class of your own must keep the architecture's "
                    "module names",
                )
            if watch.get(path) or path in kwargs_hooks:
                handles.append(
                    module.register_forward_pre_hook(
                        _pre(store, path, watch.get(path), kwargs_hooks.get(path)), with_kwargs=True
                    )
                )
            handles.append(module.register_forward_hook(_post(store, path)))
        with torch.no_grad():
            yield store
    finally:
        for handle in handles:
            handle.remove()


def _pre(store, path, inputs, kwargs_hook):
    def pre(module, args, kwargs):
        if inputs:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            store.raw[(path, "in")] = tensors[0].detach().clone() if tensors else None
        return None if kwargs_hook is None else (args, kwargs_hook(dict(kwargs)))

    return pre


def _post(store, path):
    def post(module, args, output):
        store.raw[(path, "out")] = output

    return post


@contextlib.contextmanager
def eager_attention(model):
    """Hugging Face returns attention probabilities only from its eager kernel: use it for the
    run (the same function as sdpa; the interop tests prove both equal to Algorithm 4)."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def cols(a):
    """(1, ℓ, d) or (ℓ, d), token-major → the paper's (d, ℓ), tokens as columns."""
    if a is None:
        return None
    a = np.asarray(a)
    return (a[0] if a.ndim == 3 else a).T


def softmax_cols(logits):
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)
