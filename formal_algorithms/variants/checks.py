"""Shape checks and init helpers shared by the variants' parameter NamedTuples.

A variant's θ is the paper's θ plus or minus a few leaves. Its shapes are checked by viewing it
as the paper's θ (:func:`formal_algorithms.paper.validation.check_params` does the work) and then
checking the extra leaves, so a variant never duplicates the paper's shape rules.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..paper.checks import check_mask as paper_check_mask
from ..paper.checks import check_tokens, fail
from ..paper.validation import check_params


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


# ---------------------------------------------------------- the attention and MLP primitives


def check_matrix(algorithm: str, argument: str, x, rows: int | None = None):
    """``x`` is a float matrix ``(d, ℓ)``, tokens as columns (``rows``: its d, when known)."""
    shape = np.shape(x)
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    if len(shape) != 2 or not np.issubdtype(dtype, np.floating):
        fail(
            algorithm,
            argument,
            f"must be a float matrix (d, ℓ) with tokens as columns, got "
            f"{type(x).__name__} of shape {shape} and dtype {dtype}",
        )
    if rows is not None and shape[0] != rows:
        fail(
            algorithm, argument, f"has {shape[0]} rows, expected {rows} (the weights' input width)"
        )


def check_linear(algorithm: str, name: str, W, b, d_in: int, d_out: int | None = None) -> int:
    """``W`` is ``(d_out, d_in)`` and ``b`` ``(d_out,)`` or ``None``; returns d_out."""
    shape = np.shape(W)
    if len(shape) != 2 or shape[1] != d_in or (d_out is not None and shape[0] != d_out):
        want = f"({'d_out' if d_out is None else d_out}, {d_in})"
        fail(algorithm, name, f"has shape {shape}, expected {want}")
    if b is not None and np.shape(b) != (shape[0],):
        fail(
            algorithm,
            name.replace("W_", "b_", 1),
            f"has shape {np.shape(b)}, expected ({shape[0]},)",
        )
    return shape[0]


def check_input_width(algorithm: str, argument: str, d: int, W, names=("W_k", "W_v")) -> None:
    """The rows ``d`` of the input ``argument`` against the input width of the weights ``names``
    of ``W``: when those agree with each other and not with ``d``, the input is blamed."""
    widths = {np.shape(getattr(W, name, None))[-1:] for name in names}
    if len(widths) == 1 and (width := widths.pop()) and width[0] != d:
        fail(
            algorithm,
            argument,
            f"has {d} rows, expected {width[0]} (the input width of {' and '.join(names)})",
        )


def check_positions(algorithm: str, argument: str, t, ell: int) -> None:
    if t is not None and np.shape(t) != (ell,):
        fail(
            algorithm,
            argument,
            f"has shape {np.shape(t)}, expected ({ell},): one position per column",
        )


def check_mask(algorithm: str, Mask, ell_z: int, ell_x: int) -> None:
    """``Mask`` is ``None`` (Mask ≡ 1) or ``(ℓ_z, ℓ_x)``, boolean or 0/1 (the paper's check)."""
    if Mask is not None:
        paper_check_mask(algorithm, Mask, ell_z, ell_x)


def check_function(algorithm: str, argument: str, f, example: str) -> None:
    """``f`` is a function (``silu``, not the string ``"silu"``)."""
    if not callable(f):
        fail(algorithm, argument, f"must be a function such as {example}, got {f!r}", TypeError)


def agreed_size(*sizes) -> int:
    """The size most of the leaves that share it agree on (ties: the first), so that a check
    blames the one leaf that disagrees, not its neighbours."""
    return Counter(sizes).most_common(1)[0][0]


def check_stacked_heads(algorithm: str, W, X, Z) -> int:
    """``X`` and ``Z`` matrices (tokens as columns) and ``W`` Algorithm 5's θ with one key/value
    set per query head, for a variant that maps one single-head form over the H heads: H."""
    for name, A in (("X", X), ("Z", Z)):
        if np.ndim(A) != 2:
            fail(
                algorithm,
                name,
                f"must be a matrix (d, ℓ) with tokens as columns, got {np.shape(A)}",
            )
    H, G = check_heads(algorithm, W, np.shape(X)[0], np.shape(Z)[0])
    if G != H:
        fail(algorithm, "W.W_k", f"holds {G} key/value heads for H = {H} query heads; one per head")
    return H


def check_heads(algorithm: str, W, d_x: int, d_z: int) -> tuple[int, int]:
    """Algorithm 5's θ with H query heads and G key/value sets: ``W_q`` (H, d_attn, d_x),
    ``W_k`` (G, d_attn, d_z), ``W_v`` (G, d_mid, d_z), ``W_o`` (d_out, H d_mid), biases matching or
    ``None``. Returns (H, G)."""
    for name in ("W_q", "W_k", "W_v", "W_o"):
        if not hasattr(W, name) or getattr(W, name) is None:
            fail(algorithm, f"W.{name}", "is missing: W must be MHAttentionParams", TypeError)
    q, k, v, o = (np.shape(getattr(W, n)) for n in ("W_q", "W_k", "W_v", "W_o"))
    check_input_width(algorithm, "Z", d_z, W)
    if len(q) != 3 or q[2] != d_x:
        fail(algorithm, "W.W_q", f"has shape {q}, expected (H, d_attn, {d_x})")
    if len(k) != 3 or k[1:] != (q[1], d_z):
        fail(algorithm, "W.W_k", f"has shape {k}, expected (G, {q[1]}, {d_z})")
    if len(v) != 3 or v[0] != k[0] or v[2] != d_z:
        fail(algorithm, "W.W_v", f"has shape {v}, expected ({k[0]}, d_mid, {d_z})")
    if len(o) != 2 or o[1] != q[0] * v[1]:
        fail(algorithm, "W.W_o", f"has shape {o}, expected (d_out, H·d_mid = {q[0] * v[1]})")
    for name, want in (("b_q", q[:2]), ("b_k", k[:2]), ("b_v", v[:2]), ("b_o", o[:1])):
        b = getattr(W, name, None)
        if b is not None and np.shape(b) != want:
            fail(algorithm, f"W.{name}", f"has shape {np.shape(b)}, expected {want}")
    return q[0], k[0]
