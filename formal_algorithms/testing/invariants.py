"""A toolkit for property-testing transformer invariants: of the paper's algorithms and of the
variants you build from them.

Two halves:

- **Checkers** take any function with the library's signatures and raise
  :class:`InvariantViolation` (an ``AssertionError``) with a readable message when the invariant
  does not hold. They are plain functions: call them from pytest, Hypothesis or a notebook.
- **Strategies** (Hypothesis, imported lazily: only the strategy functions need it) draw dimensions,
  token sequences, masks and parameter trees from small fixed sets of shapes, so that JAX compiles
  a handful of programs rather than one per example.

Every checker computes its expectation from the function's own outputs under a transformation
(perturb, permute, batch, differentiate), never from a second implementation, so it applies
unchanged to a new variant.

The attention-level checkers (causal Jacobian, mask respect, permutations of X or Z, the
Algorithm 3/4/5 reductions) evaluate the function under test through ``jax.jit``: one compilation
per input shape instead of one per primitive, 2-3× faster on the small inputs of property tests.
There the function must be traceable by JAX (JAX operations on its array arguments, as every
function of this library is). The architecture-level checkers call it eagerly: a whole
transformer compiles slower than its primitives, which eager evaluation compiles once per shape
and reuses across examples.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import AttentionParams, attention, mh_attention, single_query_attention
from ..paper.checks import check_count, check_tokens, fail
from .arguments import check_tolerance, checked


class InvariantViolation(AssertionError):
    """An invariant does not hold; the message names the checker and what was seen."""


def _fail(checker: str, message: str):
    raise InvariantViolation(f"{checker}: {message}")


def _jit(f):
    """``f`` compiled: the checkers call it several times on inputs of one shape."""
    return jax.jit(f)


def _close(a, b, atol):
    return np.allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _expect_close(checker: str, got, expected, atol, what: str, hint: str = ""):
    """Fail ``checker`` with ``what`` and the largest difference unless the two agree to ``atol``."""
    if not _close(got, expected, atol):
        _fail(checker, f"{what} (max |Δ| = {_max_diff(got, expected):.3g}){hint}")


# -------------------------------------------------------------------------------- causality


@checked
def check_causal_tokens(f, x, N_V: int, *, atol: float = 0.0):
    """Causality by perturbation: for every t, changing ``x[t:]`` leaves ``f(x)[:, :t]`` unchanged.

    ``f`` maps a token sequence ``(ℓ,)`` to columns ``(·, ℓ)`` (``P`` of Algorithm 10, or the
    decoder of Algorithm 8 with z fixed). Column t must depend on ``x[:t+1]`` only.
    """
    check_tokens("check_causal_tokens", "x", x, N_V)
    x = jnp.asarray(x)
    base = f(x)
    for t in range(1, x.shape[0]):
        x2 = x.at[t:].set((x[t:] + 1 + jnp.arange(x.shape[0] - t, dtype=x.dtype)) % N_V)
        out = f(x2)
        if not _close(out[:, :t], base[:, :t], atol):
            bad = int(np.argmax(np.any(~np.isclose(out[:, :t], base[:, :t], atol=atol, rtol=0), 0)))
            _fail(
                "check_causal_tokens",
                f"changing x[{t}:] changed output column {bad} < {t} "
                f"(max |Δ| = {_max_diff(out[:, :t], base[:, :t]):.3g}): a later token leaks backwards",
            )


def check_causal_jacobian(f, X):
    """Causality by the Jacobian: ``∂ f(X)[:, t] / ∂ X[:, t']`` is exactly 0 for every ``t' > t``.

    ``f`` maps ``(d, ℓ)`` to ``(d', ℓ)``. Exact zeros, not small numbers: a causal mask that leaks
    with a tiny weight is still a leak.
    """
    J = np.asarray(_jit(jax.jacobian(f))(X))  # (d', ℓ, d, ℓ)
    influence = np.abs(J).sum(axis=(0, 2))  # [t_out, t_in]
    ell = influence.shape[0]
    leaks = [(t, s) for t in range(ell) for s in range(t + 1, ell) if influence[t, s] != 0]
    if leaks:
        t, s = leaks[0]
        _fail(
            "check_causal_jacobian",
            f"output column {t} depends on later input column {s} (|∂| = {influence[t, s]:.3g}); "
            f"{len(leaks)} such (t, t') pairs",
        )
    for t in range(ell):
        if influence[t, t] == 0:
            _fail("check_causal_jacobian", f"output column {t} ignores its own input column {t}")


# ------------------------------------------------------------------------------- mask respect


@checked
def check_mask_respect(f, X, Z, Mask, *, atol: float = 1e-12):
    """Masked context has no influence: ``∂ f(X, Z, Mask)[:, t_x] / ∂ Z[:, t_z]`` is exactly 0
    wherever ``Mask[t_z, t_x]`` is False, and overwriting context columns that no query may see
    leaves the output unchanged.

    ``f(X, Z, Mask)`` has Algorithm 4's signature (returns ``(d_out, ℓ_x)``).
    """
    Mask, f = np.asarray(Mask, bool), _jit(f)
    J = np.asarray(
        _jit(jax.jacobian(lambda Z: f(X, Z, jnp.asarray(Mask))))(Z)
    )  # (d_out, ℓ_x, d_z, ℓ_z)
    influence = np.abs(J).sum(axis=(0, 2))  # [t_x, t_z]
    leaks = np.argwhere((influence.T != 0) & ~Mask)
    if leaks.size:
        t_z, t_x = leaks[0]
        _fail(
            "check_mask_respect",
            f"masked context token t_z={t_z} has gradient {influence[t_x, t_z]:.3g} into "
            f"query t_x={t_x}; Mask[{t_z}, {t_x}] is False",
        )
    hidden = ~Mask.any(axis=1)  # context tokens no query may attend to
    if hidden.any():
        Z2 = jnp.asarray(Z).at[:, hidden].set(1e3)
        if not _close(f(X, Z2, jnp.asarray(Mask)), f(X, Z, jnp.asarray(Mask)), atol):
            _fail("check_mask_respect", "overwriting fully masked context changed the output")


# ----------------------------------------------------------------------------- permutations


@checked
def check_permutation_equivariance(f, X, *, seed: int = 0, atol: float = 1e-10):
    """Bidirectional self-attention without positions: ``f(X[:, π]) = f(X)[:, π]``."""
    perm, f = np.random.default_rng(seed).permutation(X.shape[1]), _jit(f)
    lhs, rhs = f(X[:, perm]), f(X)[:, perm]
    what = f"permuting the columns of X by {perm.tolist()} did not permute the output"
    _expect_close("check_permutation_equivariance", lhs, rhs, atol, what)


@checked
def check_context_order_invariance(f, X, Z, *, seed: int = 0, atol: float = 1e-10):
    """Cross-attention reads its context as a set: ``f(X, Z[:, π]) = f(X, Z)``."""
    perm, f = np.random.default_rng(seed).permutation(Z.shape[1]), _jit(f)
    lhs, rhs = f(X, Z[:, perm]), f(X, Z)
    what = f"reordering the context by {perm.tolist()} changed the output"
    _expect_close("check_context_order_invariance", lhs, rhs, atol, what)


@checked
def check_context_permutation_invariance(f, z, x, *, seed: int = 0, atol: float = 1e-10):
    """Algorithm 8 with ``W_p = 0``: permuting the context tokens z leaves ``P = f(z, x)`` unchanged."""
    perm = np.random.default_rng(seed).permutation(len(z))
    lhs, rhs = f(jnp.asarray(z)[perm], x), f(z, x)
    what = f"permuting z by {perm.tolist()} changed P"
    _expect_close("check_context_permutation_invariance", lhs, rhs, atol, what)


# ---------------------------------------------------------------------------- distributions


@checked
def check_column_stochastic(P, *, atol: float = 1e-6):
    """Every column of ``P`` is a probability distribution: entries in [0, 1], columns sum to 1."""
    P = np.asarray(P, np.float64)
    if not np.isfinite(P).all():
        _fail("check_column_stochastic", "P has non-finite entries")
    if (P < -atol).any() or (P > 1 + atol).any():
        _fail(
            "check_column_stochastic",
            f"entries outside [0, 1]: min {P.min():.3g}, max {P.max():.3g}",
        )
    sums = P.sum(axis=0)
    if not np.allclose(sums, 1.0, atol=atol, rtol=0):
        j = int(np.argmax(np.abs(sums - 1)))
        _fail(
            "check_column_stochastic",
            f"column {j} sums to {sums[j]:.6g}, not 1 (row sums: {np.round(P.sum(1)[:4], 4)}…): "
            "is the softmax over the wrong axis?",
        )


@checked
def check_layer_norm(f, e, *, eps: float = 1e-5, atol: float = 1e-6):
    """``f(e, γ=1, β=0)`` has mean 0 and *biased* variance ``v / (v + ε)`` (1 as ε → 0).

    ``f`` has Algorithm 6's signature ``f(e, gamma, beta)``. Fails for a norm over the wrong axis
    (when given a matrix column), the unbiased variance, or ε outside the square root.
    """
    e = jnp.asarray(e)
    d = e.shape[0]
    out = np.asarray(f(e, jnp.ones(d, e.dtype), jnp.zeros(d, e.dtype)), np.float64)
    e64 = np.asarray(e, np.float64)
    v = e64.var()
    if abs(out.mean()) > atol:
        _fail("check_layer_norm", f"output mean is {out.mean():.3g}, not 0")
    expected_var = v / (v + eps)
    if abs(out.var() - expected_var) > atol:
        unbiased = v / (v * d / (d - 1) + eps)  # what dividing by the ÷(d−1) variance gives
        hint = " (unbiased variance?)" if abs(out.var() - unbiased) < atol else ""
        _fail(
            "check_layer_norm",
            f"output's biased variance is {out.var():.6g}, expected {expected_var:.6g}{hint}",
        )


@checked
def check_layer_norm_columns(f, X, *, eps: float = 1e-5, atol: float = 1e-6):
    """``f(X, γ, β)`` normalises each column of ``X`` (``(d_e, ℓ)``) separately, not each row
    (each column as :func:`check_layer_norm`)."""
    X = jnp.asarray(X)
    d = X.shape[0]
    out = f(X, jnp.ones(d, X.dtype), jnp.zeros(d, X.dtype))
    for t in range(X.shape[1]):
        try:
            check_layer_norm(lambda e, g, b, t=t: out[:, t], X[:, t], eps=eps, atol=atol)
        except InvariantViolation as error:
            _fail(
                "check_layer_norm_columns", f"column {t}: {error} (normalised over the wrong axis?)"
            )


# ------------------------------------------------------------------------------- reductions


@checked
def check_attention_reductions(
    attention_fn=attention,
    mh_attention_fn=mh_attention,
    single_query_fn=single_query_attention,
    *,
    W,
    X,
    Z,
    Mask,
    atol: float = 1e-10,
):
    """The paper's algorithms as oracles for each other, for any three implementations:

    - Algorithm 3 applied to each column equals Algorithm 4 with the context restricted by the mask;
    - Algorithm 4 looped over heads, stacked and projected equals Algorithm 5;
    - Algorithm 5 with one head, ``W_o = I``, ``b_o = 0`` equals Algorithm 4.

    ``W`` is an :class:`~formal_algorithms.attention.MHAttentionParams`.
    """
    Mask = jnp.asarray(Mask, bool)
    attention_fn, mh_attention_fn, single_query_fn = map(
        _jit, (attention_fn, mh_attention_fn, single_query_fn)
    )
    H = W.W_q.shape[0]
    heads = [attention_fn(X, Z, W.head(h), Mask) for h in range(H)]
    for h, out in enumerate(heads):
        for t in range(X.shape[1]):
            allowed = np.asarray(Mask[:, t])
            if not allowed.any():
                continue
            v = single_query_fn(X[:, t], Z[:, allowed], W.head(h))
            what = (
                f"head {h}, column {t}: Algorithm 4 differs from Algorithm 3 on the allowed context"
            )
            _expect_close("check_attention_reductions", out[:, t], v, atol, what)
    stacked = W.W_o @ jnp.concatenate(heads, axis=0) + W.b_o[:, None]
    got = mh_attention_fn(X, Z, W, Mask)
    what = "Algorithm 5 differs from Algorithm 4 per head, stacked and projected"
    _expect_close("check_attention_reductions", got, stacked, atol, what)
    d_mid = W.W_v.shape[1]
    one = W._replace(
        **{k: getattr(W, k)[:1] for k in AttentionParams._fields},
        W_o=jnp.eye(d_mid, dtype=W.W_o.dtype),
        b_o=jnp.zeros(d_mid, W.b_o.dtype),
    )
    single, direct = mh_attention_fn(X, Z, one, Mask), attention_fn(X, Z, one.head(0), Mask)
    what = "Algorithm 5 with H = 1, W_o = I, b_o = 0 differs from Algorithm 4"
    _expect_close("check_attention_reductions", single, direct, atol, what)


# ------------------------------------------------------------------------------ transformations


@checked
def check_vmap(f, batched_args, in_axes=0, *, atol: float = 1e-10):
    """``jax.vmap(f)`` over a leading batch axis equals calling ``f`` on each example."""
    if not isinstance(batched_args, (tuple, list)):
        fail(
            "check_vmap",
            "batched_args",
            f"must be a tuple of f's arguments, e.g. (xs,), got {type(batched_args).__name__}",
            TypeError,
        )
    batched_args = tuple(batched_args)
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(batched_args)
    out = jax.vmap(f, in_axes=axes)(*batched_args)
    size = next(a.shape[0] for a, ax in zip(batched_args, axes, strict=True) if ax == 0)
    for b in range(size):
        args = [a[b] if ax == 0 else a for a, ax in zip(batched_args, axes, strict=True)]
        single = f(*args)
        got = jax.tree_util.tree_map(lambda o, b=b: o[b], out)
        for g, s in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(single), strict=True
        ):
            what = f"example {b}: vmap differs from the single call"
            _expect_close("check_vmap", g, s, atol, what)


@checked
def check_jit(f, *args, atol: float = 1e-10, **kwargs):
    """``jax.jit(f)`` equals eager ``f``."""
    eager, jitted = f(*args, **kwargs), jax.jit(f)(*args, **kwargs)
    for e, j in zip(
        jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted), strict=True
    ):
        _expect_close("check_jit", e, j, atol, "jit differs from eager")


def check_shape_contract(f, args, expected_shape):
    """``f(*args)`` has ``expected_shape``, checked with ``jax.eval_shape`` (no FLOPs spent)."""
    if isinstance(expected_shape, (str, bytes)) or not hasattr(expected_shape, "__iter__"):
        fail(
            "check_shape_contract",
            "expected_shape",
            f"must be a tuple of sizes, got {expected_shape!r}",
            TypeError,
        )
    for n in expected_shape:
        check_count("check_shape_contract", "expected_shape", n, 0)
    out = jax.eval_shape(f, *args)
    if tuple(out.shape) != tuple(expected_shape):
        _fail(
            "check_shape_contract",
            f"output shape {tuple(out.shape)}, expected {tuple(expected_shape)}",
        )


# ----------------------------------------------------------------------------- architecture


def check_every_parameter_matters(f, theta):
    """Every leaf of θ receives a non-zero gradient of ``sum(f(θ))`` (use θ with γ ≠ 1, β ≠ 0).

    An architecture whose lines each use their own parameters has no dead leaf; a leaf with
    exactly zero gradient means a line reuses another's parameters (say, one attention for both
    self- and cross-attention in Algorithm 8's decoder) or skips a step.
    """
    grads = jax.grad(lambda th: jnp.sum(f(th)))(theta)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if not np.any(np.asarray(g)):
            _fail(
                "check_every_parameter_matters",
                f"theta{jax.tree_util.keystr(path)} has zero gradient: the function never uses it",
            )


@checked
def check_residual_identity(block, X, *, atol: float = 1e-12):
    """A Pre-LN residual block whose branches output zero is the identity: ``block(X) = X``.

    Call with a block whose branch output projections are zero (``W_o = b_o = 0``,
    ``W_mlp2 = b_mlp2 = 0``). Algorithm 10 normalises only the branch input X̃, so the residual
    stream passes through untouched; a block that normalises X itself in place fails.
    """
    out = block(X)
    hint = ": is the residual stream normalised in place?"
    _expect_close(
        "check_residual_identity", out, X, atol, "with zero branches the block changed X", hint
    )


# ------------------------------------------------------------------------------------ training


@checked
def check_next_token_loss(loss_fn, logits_fn, theta, x, *, atol: float = 1e-8):
    """A training loss is Algorithm 13's ``−Σ_{t=1}^{ℓ−1} log P[x[t+1], t]`` (0-based: column t
    predicts ``x[t+1]``): catches targets shifted twice or not at all.

    ``loss_fn(theta, x)`` is under test; ``logits_fn(x, theta)`` gives ``W_u X`` (``(N_V, ℓ)``).
    """
    logP = np.asarray(jax.nn.log_softmax(logits_fn(x, theta), axis=0), np.float64)
    x = np.asarray(x)
    expected = -sum(logP[x[t + 1], t] for t in range(len(x) - 1))
    got = float(loss_fn(theta, jnp.asarray(x)))
    if not math.isclose(got, expected, abs_tol=atol, rel_tol=1e-9):
        unshifted = -sum(logP[x[t], t] for t in range(len(x)))
        twice = -sum(logP[x[t + 2], t] for t in range(len(x) - 2))
        hint = ""
        if math.isclose(got, unshifted, rel_tol=1e-6):
            hint = " (targets not shifted: column t is scored on x[t])"
        elif math.isclose(got, twice, rel_tol=1e-6):
            hint = " (targets shifted twice: column t is scored on x[t+2])"
        _fail(
            "check_next_token_loss",
            f"loss {got:.8g}, expected −Σ log P[x[t+1], t] = {expected:.8g}{hint}",
        )


@checked
def check_incremental_matches_full(step_logits, full_logits, x, *, atol: float = 1e-8):
    """Cached decoding: ``step_logits(x)`` (logits computed one position at a time with a cache,
    ``(N_V, ℓ)``) equals the full forward ``full_logits(x)`` column by column. Catches a cache
    that writes or reads keys at the wrong position, or gives the new token the wrong position.
    """
    got, expected = np.asarray(step_logits(x)), np.asarray(full_logits(x))
    for t in range(expected.shape[1]):
        what = f"position {t}: cached logits differ from the full forward"
        hint = "; positions off by one?"
        _expect_close("check_incremental_matches_full", got[:, t], expected[:, t], atol, what, hint)


# ---------------------------------------------------------------------------------- strategies
# Shapes come from small fixed sets so that JAX compiles a handful of programs per test.

SMALL_DIMS = (2, 3, 4, 6)
SMALL_LENGTHS = (1, 2, 3, 5)


def _sizes(strategy: str, argument: str, values, minimum: int) -> tuple[int, ...]:
    """A strategy's fixed set of sizes: a non-empty list of integers ≥ ``minimum``, checked
    when the strategy is made (Hypothesis would draw from it only when a test runs)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        fail(strategy, argument, f"must be a list of sizes, got {values!r}", TypeError)
    values = tuple(values)
    if not values:
        fail(strategy, argument, f"is empty; give at least one size (≥ {minimum})")
    return tuple(check_count(strategy, argument, n, minimum) for n in values)


def dims(values=SMALL_DIMS):
    """A dimension (d_e, d_attn, d_mid, …) from a small fixed set."""
    from hypothesis import strategies as st

    return st.sampled_from(_sizes("dims", "values", values, 1))


def token_sequences(N_V: int, lengths=SMALL_LENGTHS, *, specials: bool = False):
    """Token sequences (``jnp.int32``) of a length from ``lengths``. By default the three special
    tokens of the paper (mask, bos, eos: the top three ids) are excluded; ``specials=True``
    frames the sequence as a text is framed: ``bos, tokens…, eos`` (then a length may be 0).
    ``N_V`` ≥ 4 leaves at least one ordinary token."""
    from hypothesis import strategies as st

    check_count("token_sequences", "N_V", N_V, 4)  # mask, bos, eos and one ordinary token
    lengths = _sizes("token_sequences", "lengths", lengths, 0 if specials else 1)
    top = N_V - 3  # ordinary tokens are [0, N_V − 3)

    @st.composite
    def draw(draw):
        ell = draw(st.sampled_from(lengths))
        inner = draw(st.lists(st.integers(0, top - 1), min_size=ell, max_size=ell))
        if specials:
            inner = [N_V - 2, *inner, N_V - 1]
        return jnp.asarray(inner, jnp.int32)

    return draw()


def masks(ell_z: int, ell_x: int, kind: str = "any"):
    """Boolean masks ``(ℓ_z, ℓ_x)``: ``"bidirectional"``, ``"unidirectional"`` (eq. 3, square),
    ``"padding"`` (a suffix of the context masked for every query, at least one token kept) or
    ``"any"`` (arbitrary, every query keeps at least one context token)."""
    from hypothesis import strategies as st

    check_count("masks", "ell_z", ell_z, 1)
    check_count("masks", "ell_x", ell_x, 1)
    kinds = ("any", "bidirectional", "unidirectional", "padding")
    if kind not in kinds:
        fail("masks", "kind", f"must be one of {kinds}, got {kind!r}")
    if kind == "bidirectional":
        return st.just(jnp.ones((ell_z, ell_x), bool))
    if kind == "unidirectional":
        return st.just(jnp.asarray(np.triu(np.ones((ell_z, ell_x), bool))))
    if kind == "padding":
        return st.integers(1, ell_z).map(
            lambda n: jnp.asarray(np.arange(ell_z)[:, None] < n).repeat(ell_x, axis=1)
        )

    def build(bits):
        M = np.asarray(bits, bool).reshape(ell_z, ell_x)
        M[0, ~M.any(axis=0)] = True
        return jnp.asarray(M)

    return st.lists(st.booleans(), min_size=ell_z * ell_x, max_size=ell_z * ell_x).map(build)


def seeds():
    """A controlled seed for ``jax.random.key``."""
    from hypothesis import strategies as st

    return st.integers(0, 2**16)


def params(init_fn, *, perturb: float = 0.3, dtype=jnp.float64, **hyperparameters):
    """Parameter pytrees drawn as ``init_fn(key, **hyperparameters)``, each leaf then moved by
    ``perturb · N(0, 1)`` so that γ ≠ 1, β ≠ 0 and biases ≠ 0 (a missing norm or bias shows).
    Works for every ``init_*`` function of the library, and for any ``init(key, **hp)`` of yours."""
    if not callable(init_fn):
        fail("params", "init_fn", f"must be a function init(key, **hp), got {init_fn!r}", TypeError)
    check_tolerance("params", "perturb", perturb)

    def build(seed):
        key, noise = jax.random.split(jax.random.key(seed))
        theta = init_fn(key, dtype=dtype, **hyperparameters)
        leaves, tree = jax.tree_util.tree_flatten(theta)
        flat = jax.random.normal(noise, (sum(int(np.prod(w.shape)) for w in leaves),), dtype)
        out, offset = [], 0
        for w in leaves:
            out.append(w + perturb * flat[offset : offset + w.size].reshape(w.shape))
            offset += w.size
        return jax.tree_util.tree_unflatten(tree, out)

    return seeds().map(build)
