"""The only place where the trace reads JAX's internals: the tracers of ``vmap`` and ``grad``.

A value recorded inside ``jax.vmap`` is a batch tracer (its batched array and the axis the batch
lies on); inside ``jax.grad`` it is a JVP or linearize tracer (its primal). JAX exposes neither
publicly, so this module names the private attributes once and :func:`check` confirms they are
still where it expects them, with an error that names the JAX version if they have moved
(tests/tools/test_trace.py runs it).
"""

from __future__ import annotations

import jax

__all__ = ["batched", "check", "primal"]


def _modules():
    from jax._src.interpreters import ad, batching

    return ad, batching


def check() -> None:
    """Raise ``RuntimeError`` naming the JAX version if the internals below have moved."""
    try:
        ad, batching = _modules()
        missing = [
            name
            for owner, name in (
                (ad, "JVPTracer"),
                (ad, "LinearizeTracer"),
                (batching, "BatchTracer"),
                (batching, "NotMapped"),
            )
            if not hasattr(owner, name)
        ]
        for attribute in ("val", "batch_dim"):
            if attribute not in getattr(batching.BatchTracer, "__slots__", ()) and not hasattr(
                batching.BatchTracer, attribute
            ):
                missing.append(f"BatchTracer.{attribute}")
    except ImportError as error:
        missing = [str(error)]
    if missing:
        raise RuntimeError(
            f"formal_algorithms.trace: JAX {jax.__version__} has moved the internals the trace "
            f"reads ({', '.join(missing)}); values inside vmap and grad cannot be recorded. "
            f"Pin the jax version this release was tested with, or update trace/jax_internals.py"
        )


def primal(value):
    """``value`` itself, or the primal under the ``jax.grad`` (JVP/linearize) tracers around it."""
    ad, _ = _modules()
    while isinstance(value, ad.JVPTracer | ad.LinearizeTracer):
        value = value.primal
    return value


def batched(value):
    """``(array, axis)`` of a ``vmap`` tracer (``axis`` ``None`` when not mapped), else ``None``."""
    _, batching = _modules()
    if not isinstance(value, batching.BatchTracer):
        return None
    axis = value.batch_dim
    return value.val, None if isinstance(axis, batching.NotMapped) else axis
