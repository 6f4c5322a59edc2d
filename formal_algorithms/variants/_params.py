"""Shape checks and init helpers shared by the variants' parameter NamedTuples.

A variant's θ is the paper's θ plus or minus a few leaves. Its shapes are checked by viewing it
as the paper's θ (:func:`formal_algorithms.architectures.check_params` does the work) and then
checking the extra leaves, so a variant never duplicates the paper's shape rules.
"""

from __future__ import annotations

import numpy as np

from ..paper.architectures import check_params
from ..paper.checks import check_tokens, fail


def check_extra_leaves(algorithm: str, theta, names, d: int) -> None:
    """Each leaf ``theta.<name>`` is a vector of length ``d`` (a final norm's γ or β)."""
    for name in names:
        shape = np.shape(getattr(theta, name))
        if shape != (d,):
            fail(algorithm, f"theta.{name}", f"has shape {shape}, expected ({d},)")


def check_inputs(algorithm: str, theta, expected_type, paper_view=None, extra=(), **sequences):
    """θ has the right type, the paper's part of it the right shapes (``paper_view(θ)``: θ seen as
    the paper's NamedTuple), the extra leaves shape ``(d_e,)``, and the token sequences are valid."""
    if not isinstance(theta, expected_type):
        got = type(theta).__name__
        fail(algorithm, "theta", f"must be {expected_type.__name__}, got {got}", TypeError)
    check_params(theta if paper_view is None else paper_view(theta), algorithm)
    check_extra_leaves(algorithm, theta, extra, theta.W_e.shape[0])
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    for name, x in sequences.items():
        check_tokens(algorithm, name, x, N_V, ell_max)
