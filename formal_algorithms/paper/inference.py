"""Paper §7, inference: Algorithm 14 (DInference) and Algorithm 15 (EDInference), literally.

Each step calls the whole transformer (Algorithm 10 or 8) on the sequence generated so far and
samples one token from the last column. That is the reference; :mod:`formal_algorithms.cache` has
the key/value-cache forms, tested to return the same tokens for the same key.

Departures from the printed algorithms (each one a documented decision):

- **Log-space sampling.** Line 5 of Alg 14 and line 6 of Alg 15 sample from ``q ∝ p^{1/τ}``.
  Raising ``p`` to ``1/τ`` underflows to ``0/0`` for small τ, so we sample from
  ``log q = (log p)/τ + const = (W_u X)[:, t]/τ + const``: the transformer's logits (``log P`` up to
  a per-column constant, which cancels) divided by τ, through the Gumbel-max trick of
  ``jax.random.categorical``. The logits are shifted by their maximum before dividing, so that
  even τ = 1e-300 gives finite or ``-inf`` scores, never NaN.
- **τ limits.** The paper's box says τ ∈ (0, ∞); its prose names the limits. ``tau=0`` returns the
  argmax (the lowest index among exact ties) and ``tau=math.inf`` samples uniformly over V; both
  are extensions. ``tau < 0``, NaN or a non-number is a ``ValueError``.
- **Keys.** The paper's sampling is implicit; here randomness is an explicit ``jax.random`` key.
  Step i (0-based: the token that lands at output index i of Alg 14, or at ``x̂[i+1]`` in Alg 15)
  draws with ``jax.random.fold_in(key, i)``, nothing else. So a run is a prefix of any longer run
  with the same key, and the cached forms reproduce the same draws exactly.
- **Length guards.** Alg 14 feeds ``ℓ + ℓ_gen − 1`` tokens to DTransformer in its last step; more
  than ℓ_max is a ``ValueError`` (the paper leaves it open) unless ``window=True`` asks for a
  sliding window: each step then feeds only the last ℓ_max tokens (at positions 0..ℓ_max−1).
  Alg 15's loop may never end: ``max_length`` (default ℓ_max, at most ℓ_max + 1) caps the length of
  ``x̂`` including ``bos_token``; when the cap is reached the sequence is returned as it is, without
  a final ``eos_token`` (the caller can test ``x̂[-1] == eos_token``).
- **Empty prompt.** ``P[:, ℓ + i − 1]`` needs ℓ ≥ 1; an empty prompt is a ``ValueError``
  (prompt with ``bos_token`` for an unconditional sample).
- Special tokens, 0-based: ``mask_token = N_V − 3``, ``bos_token = N_V − 2``, ``eos_token = N_V − 1``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .architectures import d_transformer_logits, ed_decode_logits, ed_encode
from .checks import check_count, check_key, check_token_dtype, check_tokens, concrete, fail
from .functions import gelu, relu, softmax
from .normalisation import EPS
from .parameters import DTransformerParams, EDTransformerParams
from .validation import check_params

D_INFERENCE = "DInference (Algorithm 14)"
ED_INFERENCE = "EDInference (Algorithm 15)"
SAMPLE_TOKEN = "sample_token (Algorithm 14 line 5, Algorithm 15 line 6)"


def special_tokens(N_V: int) -> dict:
    """The paper's special tokens at the top of V, 0-based: mask, bos, eos = N_V − 3, N_V − 2, N_V − 1."""
    if check_count("special_tokens", "N_V", N_V) < 3:
        fail("special_tokens", "N_V", f"= {N_V} must be at least 3 (mask, bos, eos)")
    return dict(mask_token=N_V - 3, bos_token=N_V - 2, eos_token=N_V - 1)


# ------------------------------------------------------------------------------------ sampling


def check_tau(algorithm: str, tau) -> float:
    """Validate τ eagerly: a real number in [0, ∞]; 0 means argmax, ``math.inf`` uniform."""
    if isinstance(tau, (bool, np.bool_, str, bytes)) or np.ndim(tau) != 0:
        fail(algorithm, "tau", f"must be a real number in [0, inf], got {tau!r}", TypeError)
    try:
        tau = float(tau)  # also rejects complex numbers and traced values
    except Exception:
        fail(
            algorithm, "tau", f"must be a concrete real number in [0, inf], got {tau!r}", TypeError
        )
    if math.isnan(tau) or tau < 0:
        fail(algorithm, "tau", f"= {tau} must be in [0, inf] (0: argmax, inf: uniform)")
    return tau


def sample_token(key, logits, tau):
    """Line 5 of Alg 14 / line 6 of Alg 15: one token from ``q ∝ p^{1/τ}``, in log space.

    ``logits``: ``(N_V,)``, the column ``(W_u X)[:, t]`` whose softmax is ``p``, so that
    ``log q = logits / τ + const``. ``tau`` is a runtime number (a new τ does not recompile):
    ``tau == 0`` takes the argmax (lowest index among exact ties), ``tau == inf`` draws uniformly
    over V, any other τ > 0 draws by Gumbel-max (``jax.random.categorical``). Validate τ first with
    :func:`check_tau`. Returns a 0-d int32 token id.

    Logits holding NaN or +∞, or −∞ everywhere, define no distribution. On concrete input that
    (and a τ outside [0, ∞]) raises ``ValueError``; under ``jit``/``vmap``, where values cannot be
    checked, the token is ``-1``, an id no vocabulary has, which every caller in this library
    (Algorithms 14, 15, the cached forms, the command line) checks on the host and reports with
    :func:`check_sampled`.
    """
    if jnp.ndim(logits) != 1:
        fail(SAMPLE_TOKEN, "logits", f"must be one column (N_V,), got shape {jnp.shape(logits)}")
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        fail(
            SAMPLE_TOKEN,
            "logits",
            f"must be one float column, got dtype {jnp.result_type(logits)}",
            TypeError,
        )
    check_key(SAMPLE_TOKEN, key)
    if not isinstance(tau, jax.core.Tracer):
        check_tau(SAMPLE_TOKEN, tau)
    values = concrete(logits)
    if values is not None and not _has_distribution(values):
        fail(SAMPLE_TOKEN, "logits", f"hold {_what_is_wrong(values)}: no distribution to sample")
    tau = jnp.asarray(tau, logits.dtype)
    y = jax.random.categorical(key, _log_q(logits, tau))  # Gumbel-max: argmax(log q + noise)
    y = jnp.where(tau == 0, jnp.argmax(logits), y)  # τ → 0: the argmax
    no_distribution = jnp.any(jnp.isnan(logits) | jnp.isposinf(logits)) | jnp.all(
        jnp.isneginf(logits)
    )
    return jnp.where(no_distribution, -1, y).astype(jnp.int32)


def _log_q(logits, tau):
    """``log q`` up to a constant: ``(logits − max)/τ``, so ``q ∝ p^{1/τ}`` with ``p = softmax``.

    Shifted by the max first: ``(logits − max)/τ`` is ≤ 0, finite or −∞ for every τ > 0, so no
    overflow and no ∞ − ∞; the shift is constant over the column and cancels in ``q``. τ = ∞ gives
    equal scores (uniform q); τ = 0 divides by 1 (the callers take the argmax instead).
    """
    safe_tau = jnp.where(tau == 0, 1, tau)
    return jnp.where(jnp.isinf(tau), 0, (logits - jnp.max(logits)) / safe_tau)


def tempered_distribution(logits, tau):
    """The distribution ``q ∝ p^{1/τ}`` that :func:`sample_token` draws from (Alg 14 line 5,
    Alg 15 line 6), as a column summing to 1: ``softmax((W_u X)[:, t] / τ)``. Its limits, as the
    sampler takes them: τ = 0 is one-hot at the argmax (lowest index among ties), τ = ∞ uniform.

    The samplers never form it (they draw by Gumbel-max from log q); the inference algorithms
    compute it beside the draw so the trace can show line 5's q. Under ``jit`` nothing uses it
    and XLA drops it.
    """
    tau = jnp.asarray(tau, logits.dtype)
    argmax = jax.nn.one_hot(jnp.argmax(logits), logits.shape[0], dtype=logits.dtype)
    return jnp.where(tau == 0, argmax, softmax(_log_q(logits, tau)))


def _has_distribution(logits) -> bool:
    return not (np.isnan(logits).any() or np.isposinf(logits).any() or np.isneginf(logits).all())


def _what_is_wrong(logits) -> str:
    if np.isnan(logits).any():
        return "NaN"
    return "+inf" if np.isposinf(logits).any() else "-inf in every entry"


def check_sampled(algorithm: str, y, step, theta=None) -> None:
    """Raise if a concrete sampled token is ``-1`` (:func:`sample_token` found no distribution):
    the logits of that step held NaN or ±∞, which names θ (its first non-finite leaf, if any)."""
    values = concrete(y)
    if values is None or not np.any(values < 0):
        return
    leaf = first_non_finite(theta) if theta is not None else None
    too_large = "the logits overflowed (θ is finite but too large: too high a learning rate?)"
    cause = f"{leaf} is not finite" if leaf else too_large
    fail(
        algorithm,
        "theta",
        f"gave logits with NaN or infinities at step {step}, so there is no "
        f"distribution to sample from: {cause}",
    )


def first_non_finite(tree, prefix="theta"):
    """The path of the first leaf of ``tree`` holding NaN or ±∞ (``None`` if all are finite)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        values = concrete(leaf)
        if values is not None and np.issubdtype(values.dtype, np.inexact):
            if not np.isfinite(values).all():
                return prefix + jax.tree_util.keystr(path)
    return None


def step_key(key, i):
    """The key of step i (0-based) of Algorithms 14 and 15: ``fold_in(key, i)``."""
    return jax.random.fold_in(key, i)


# --------------------------------------------------------------------------------- Algorithm 14


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def d_step(x, theta, key, tau, *, activation, eps):
    """Lines 3-5 of Alg 14 for the current ``x``; jit caches one executable per length of x.

    The samplers read the logits ``W_u X``: ``p`` and ``q`` are formed only for the trace (unused
    under ``jit``, so XLA drops them)."""
    logits = d_transformer_logits(x, theta, activation=activation, eps=eps)  # line 3 (part)
    p = softmax(logits[:, -1])  # lines 3-4: p ← P[:, ℓ + i − 1]  # noqa: F841
    q = tempered_distribution(logits[:, -1], tau)  # line 5 (part): q ∝ p^{1/τ}  # noqa: F841
    return sample_token(key, logits[:, -1], tau)  # line 5: y drawn from q


def d_inference(
    x, theta: DTransformerParams, key, *, ell_gen, tau=1.0, window=False, activation=gelu, eps=EPS
):
    """Algorithm 14, ``y ← DInference(x, θ̂)``: prompt a decoder-only transformer.

    ``x``: the prompt ``(ℓ,)``, 0-based token ids, ℓ ≥ 1. ``key``: a ``jax.random`` key; step i
    draws with ``fold_in(key, i)``. ``ell_gen``: number of tokens to generate. ``tau``: the
    temperature, ``0`` (argmax) and ``inf`` (uniform) included. Returns ``y`` ``(ell_gen,)``, the
    ell_gen new tokens only (line 8), in ``x``'s integer dtype.

    ``ℓ + ℓ_gen − 1 > ℓ_max`` raises ``ValueError`` unless ``window=True``, which feeds the last
    ℓ_max tokens at each step (and then also accepts prompts longer than ℓ_max).
    ``activation``/``eps`` are passed to Algorithm 10. Line map: line 1 ``ell``; line 2 the loop;
    lines 3-5 one call of a jitted step (the full forward on ``x``, its last column, one sample);
    line 6 the append; line 8 the slice. The key may be a tracer (``vmap`` over keys works).
    """
    check_params(theta, D_INFERENCE, DTransformerParams)
    if not isinstance(theta, DTransformerParams):
        fail(D_INFERENCE, "theta", f"must be DTransformerParams, got {type(theta)}", TypeError)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    x = jnp.asarray(x)
    check_tokens(D_INFERENCE, "x", x, N_V, None if window else ell_max)
    check_token_dtype(D_INFERENCE, "x", x, N_V)
    check_key(D_INFERENCE, key)
    ell_gen = check_count(D_INFERENCE, "ell_gen", ell_gen)
    tau = check_tau(D_INFERENCE, tau)
    ell = x.shape[0]  # line 1
    if not window and ell + ell_gen - 1 > ell_max:
        fail(
            D_INFERENCE,
            "ell_gen",
            f"= {ell_gen} with a prompt of length {ell} would run DTransformer on "
            f"{ell + ell_gen - 1} tokens > ell_max = {ell_max}; shorten the prompt or ell_gen, "
            f"or pass window=True for a sliding window",
        )
    dtype = x.dtype
    x = _tokens_int32(x)
    for i in range(ell_gen):  # line 2 (i is the paper's i − 1)
        x_in = x[-ell_max:] if window else x  # the sliding window, when asked for
        y = d_step(_device(x_in), theta, step_key(key, i), tau, activation=activation, eps=eps)
        check_sampled(D_INFERENCE, y, i, theta)  # -1: the logits had no distribution
        x = _append(x, y)  # line 6: x ← [x, y]
    y = x[ell:]  # line 8: y = x[ℓ+1 : ℓ+ℓ_gen] (1-based)
    return y.astype(dtype) if isinstance(y, jax.core.Tracer) else jnp.asarray(y.astype(dtype))


# Token sequences live on the host (numpy int32) between steps whenever they are concrete, so
# that the growing x needs no device operation compiled for each new length; int32 for every
# input dtype so that the jitted steps compile once per length, not once per length and dtype.
# Under a transformation (e.g. vmap over keys) the sampled tokens are tracers and x moves to jnp.


def _tokens_int32(x):
    return x.astype(jnp.int32) if isinstance(x, jax.core.Tracer) else np.asarray(x, np.int32)


def _append(x, y):
    if isinstance(x, jax.core.Tracer) or isinstance(y, jax.core.Tracer):
        return jnp.concatenate([jnp.asarray(x), jnp.reshape(y, (1,)).astype(jnp.int32)])
    return np.append(x, np.int32(y))


def _device(x):
    return x if isinstance(x, jax.core.Tracer) else jnp.asarray(x)


# --------------------------------------------------------------------------------- Algorithm 15


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _ed_encode(z, theta, *, activation, eps):
    return ed_encode(z, theta, activation=activation, eps=eps)


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _ed_step(Z, x_hat, theta, key, tau, *, activation, eps):
    """Lines 4-6 of Alg 15: Algorithm 8 on the current ``x̂`` (one executable per length), its
    last column, one sample."""
    logits = ed_decode_logits(x_hat, Z, theta, activation=activation, eps=eps)  # line 4 (part)
    p = softmax(logits[:, -1])  # lines 4-5: p ← P[:, length(x̂)]  # noqa: F841
    q = tempered_distribution(logits[:, -1], tau)  # line 6 (part): q ∝ p^{1/τ}  # noqa: F841
    return sample_token(key, logits[:, -1], tau)  # line 6: y drawn from q


def check_max_length(algorithm, max_length, ell_max):
    """``max_length`` caps ``length(x̂)`` (bos and eos included): 2 ≤ max_length ≤ ℓ_max + 1.

    The decoder sees ``x̂`` minus its last token, so ℓ_max + 1 is the longest x̂ Algorithm 8 can
    produce; the default ℓ_max keeps every returned x̂ a valid Algorithm 8 input.
    """
    if max_length is None:
        return ell_max
    max_length = check_count(algorithm, "max_length", max_length, minimum=2)
    if max_length > ell_max + 1:
        fail(
            algorithm,
            "max_length",
            f"= {max_length} > ell_max + 1 = {ell_max + 1}: the decoder cannot read more than "
            f"ell_max = {ell_max} tokens",
        )
    return max_length


def ed_inference(
    z, theta: EDTransformerParams, key, *, tau=1.0, max_length=None, activation=relu, eps=EPS
):
    """Algorithm 15, ``x̂ ← EDInference(z, θ̂)``: sequence-to-sequence prediction.

    ``z``: the context ``(ℓ_z,)``, 0-based token ids. ``key``: a ``jax.random`` key; the token
    ``x̂[i+1]`` is drawn with ``fold_in(key, i)``. ``tau``: temperature, ``0`` and ``inf`` included.
    Returns ``x̂`` (1-D, ``z``'s integer dtype) starting with ``bos_token = N_V − 2`` and, unless
    the guard stopped it, ending with the first sampled ``eos_token = N_V − 1``.

    Guard (the paper's loop may never end): ``length(x̂) ≤ max_length`` (default ℓ_max; at most
    ℓ_max + 1). When x̂ reaches ``max_length`` without eos, it is returned as it is (no eos).
    Line map: line 1 ``x_hat``; line 2 ``y = None``; line 3 the ``while``; lines 4-6 one call of a
    jitted step (full Algorithm 8 on (z, x̂), its last column, one sample); line 7 the append.
    ``activation``/``eps`` are passed to Algorithm 8 (ReLU unless given).

    Not under ``vmap`` over keys: the length of x̂ depends on the sampled tokens, so a batch of
    keys gives x̂ of different lengths. A traced key or z raises ``TypeError`` naming the batched
    form, :func:`~formal_algorithms.practice.cache.ed_inference_cached_batch`.
    """
    if isinstance(key, jax.core.Tracer) or isinstance(z, jax.core.Tracer):
        fail(
            ED_INFERENCE,
            "key" if isinstance(key, jax.core.Tracer) else "z",
            "is traced (vmap/jit): x̂'s length depends on the sampled tokens, so Algorithm 15 "
            "cannot be vmapped; use practice.cache.ed_inference_cached_batch(contexts, theta, keys)",
            TypeError,
        )
    check_params(theta, ED_INFERENCE, EDTransformerParams)
    if not isinstance(theta, EDTransformerParams):
        fail(ED_INFERENCE, "theta", f"must be EDTransformerParams, got {type(theta)}", TypeError)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    z = jnp.asarray(z)
    check_tokens(ED_INFERENCE, "z", z, N_V, ell_max)
    check_token_dtype(ED_INFERENCE, "z", z, N_V)
    check_key(ED_INFERENCE, key)
    tau = check_tau(ED_INFERENCE, tau)
    max_length = check_max_length(ED_INFERENCE, max_length, ell_max)
    z_int32 = jnp.asarray(np.asarray(z, np.int32))  # one executable per length, not per dtype
    eos = special_tokens(N_V)["eos_token"]
    x_hat = [special_tokens(N_V)["bos_token"]]  # line 1
    y = None  # line 2: a sentinel that is no token
    while y != eos:  # line 3
        if len(x_hat) >= max_length:  # the length guard (not in the paper)
            break
        i = len(x_hat) - 1  # this draw lands at x̂[i + 1]
        x_in = jnp.asarray(np.asarray(x_hat, np.int32))
        # Line 4 is Algorithm 8 in full: its encoder (lines 1-9) runs again at every step,
        # jitted apart from the decoder only so that it compiles once per length of z.
        Z = _ed_encode(z_int32, theta, activation=activation, eps=eps)  # line 4 (part: Z)
        key_i = step_key(key, i)
        y = int(_ed_step(Z, x_in, theta, key_i, tau, activation=activation, eps=eps))  # lines 4-6
        check_sampled(ED_INFERENCE, y, i, theta)  # -1: the logits had no distribution
        x_hat.append(y)  # line 7
    return jnp.asarray(np.asarray(x_hat, z.dtype))  # line 9
