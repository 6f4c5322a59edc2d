"""Which compare function is running (``compare``, ``compare_batch`` or ``compare_cached``), for
the refusals made deep inside a comparison, where the caller's name is not an argument (the model
of no family, a family's configuration it does not write, a module its table reads that the
model lacks): :func:`~formal_algorithms.interop.compare.session` sets it for the comparison."""

from __future__ import annotations

import contextlib
import contextvars

_CALLER = contextvars.ContextVar("formal_algorithms_compare_caller", default="compare")


def caller() -> str:
    """The name of the compare function running (``"compare"`` outside any)."""
    return _CALLER.get()


@contextlib.contextmanager
def calling(where: str):
    """Inside: :func:`caller` is ``where``."""
    token = _CALLER.set(where)
    try:
        yield
    finally:
        _CALLER.reset(token)
