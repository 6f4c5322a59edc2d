"""The checkers' own arguments, checked once for all of them: :func:`checked` wraps a checker so
that the model, a tolerance, an ε, a length, a batch size, a seed or a vocabulary size it is given
is refused by name (``check_jit: argument 'atol' …``) instead of turning into a wrong verdict (a
NaN or negative ``atol`` fails every comparison; ``batch=0`` ends in numpy's "need at least one
array"; a negative ε is blamed on the function under test) or into Python's error about an
attribute of a plain function given as the model."""

from __future__ import annotations

import functools
import inspect

import jax
import numpy as np

from ..paper.checks import check_count, check_eps, fail
from .token_model import TokenModel


def check_tolerance(checker: str, argument: str, atol, *, positive: bool = False) -> None:
    """A tolerance: a finite real number ≥ 0 (0: exact), or > 0 when ``positive``."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(atol, jax.core.Tracer):
        return
    if isinstance(atol, (bool, np.bool_, str, bytes)) or np.ndim(atol) != 0:
        fail(checker, argument, f"must be a real number {bound}, got {atol!r}", TypeError)
    value = float(atol)
    if not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
        fail(checker, argument, f"must be a finite number {bound}, got {atol!r}")


def check_model(checker: str, argument: str, model) -> None:
    """A :class:`~.token_model.TokenModel`, as the adapters make from anyone's model."""
    if not isinstance(model, TokenModel):
        fail(
            checker,
            argument,
            "must be a TokenModel (make one with from_paper, from_hf, from_torch, from_jax or "
            f"from_callable of formal_algorithms.testing), got {type(model).__name__}",
            TypeError,
        )


def _count(minimum):
    return lambda checker, argument, n: check_count(checker, argument, n, minimum)


# The arguments the checkers share, and what each must be. ``length`` ≥ 2: a probe needs a token
# before and after a position.
RULES = {
    "model": check_model,
    "atol": check_tolerance,
    "eps": lambda checker, argument, eps: check_eps(checker, eps),
    "length": _count(2),
    "batch": _count(1),
    "new_tokens": _count(1),
    "seed": _count(0),
    "N_V": _count(1),
}


def checked(checker):
    """``checker`` with its arguments named in :data:`RULES` checked before it runs, under its
    own name. Arguments it does not get (defaults) are not checked; a call Python itself refuses
    (an unknown keyword) reaches ``checker`` unchanged and fails there."""
    signature = inspect.signature(checker)
    names = [n for n in signature.parameters if n in RULES]

    @functools.wraps(checker)
    def run(*args, **kwargs):
        try:
            given = signature.bind(*args, **kwargs).arguments
        except TypeError:
            return checker(*args, **kwargs)
        for name in names:
            if name in given:
                RULES[name](checker.__name__, name, given[name])
        return checker(*args, **kwargs)

    return run
