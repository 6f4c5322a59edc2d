"""Sampling options beyond the paper's temperature: top-k, top-p (nucleus), a stop string.

Algorithm 14 (line 5) and Algorithm 15 (line 6) draw a token from ``q ∝ p^{1/τ}``, with nothing
else. Practice (GPT-2's samples, Hugging Face's ``generate``, nanoGPT's ``sample.py``) restricts
the draw to the most likely tokens first. Each restriction here is one function that filters the
distribution of that line before the draw, leaving the paper's draw itself
(:func:`~formal_algorithms.paper.inference.sample_token`) untouched:

- :func:`top_k_keep`: keep the ``k`` most likely tokens under ``p`` (ties at the ``k``-th
  probability are all kept); ``k = 0`` keeps every token.
- :func:`top_p_keep`: nucleus sampling (Holtzman et al. 2020): keep the most likely tokens, in
  decreasing order of ``p``, until their mass under ``q`` (the temperature-adjusted distribution
  the paper draws from) reaches ``top_p``; the most likely token is always kept; ``top_p = 1``
  keeps every token.
- :func:`sample_token_filtered`: line 5 with both filters: the draw of ``sample_token`` on the
  kept tokens only, renormalised. With ``k = 0`` and ``top_p = 1`` it is ``sample_token`` exactly
  (the same token for the same key), so the options cost nothing when they are off.
- :func:`stop_at`: text pieces streamed until a stop string appears; the stop string and
  everything after it are never shown (a piece that may be the start of it is held back).

``k``, ``top_p`` and ``τ`` are runtime values inside ``jax.jit`` (a new value does not recompile).
Each is listed in algorithms.md's departures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.checks import check_key, concrete, fail
from ..paper.inference import check_tau, sample_token

TOP_K = "top-k sampling"
TOP_P = "top-p (nucleus) sampling"
TOP_K_KEEP = f"top_k_keep ({TOP_K})"
TOP_P_KEEP = f"top_p_keep ({TOP_P})"
FILTERED = "sample_token_filtered (Algorithm 14 line 5 with top-k and top-p)"
STOP_AT = "stop_at (a stop string)"


def check_top_k(name: str, k, argument: str = "top_k") -> int:
    """``k``: an integer ≥ 0 (0: no top-k filter), a Python or a 0-d array integer."""
    if np.ndim(k) != 0 or not np.issubdtype(np.asarray(k).dtype, np.integer):
        fail(name, argument, f"must be an integer >= 0 (0: off), got {k!r}", TypeError)
    if k < 0:
        fail(name, argument, f"= {int(k)} must be >= 0 (0: off)")
    return int(k)


def check_top_p(name: str, p) -> float:
    """``top_p``: a number in (0, 1] (1: no nucleus filter); NaN is refused."""
    if isinstance(p, (bool, np.bool_, str, bytes)) or np.ndim(p) != 0:
        fail(name, "top_p", f"must be a number in (0, 1] (1: off), got {p!r}", TypeError)
    try:
        p = float(p)
    except (TypeError, ValueError):
        fail(name, "top_p", f"must be a number in (0, 1] (1: off), got {p!r}", TypeError)
    if not 0 < p <= 1:
        fail(name, "top_p", f"= {p} must be in (0, 1] (1: off)")
    return p


def _eager(value) -> bool:
    """True for a concrete value (checked here); a traced one (inside ``jit``/``vmap``) is not."""
    return not isinstance(value, jax.core.Tracer)


def _check_logits(name: str, logits) -> None:
    """One float column ``(N_V,)``; on concrete input, one that defines a distribution (no NaN,
    no +∞, not −∞ everywhere), as :func:`sample_token` requires."""
    if np.ndim(logits) != 1:
        fail(name, "logits", f"must be one column (N_V,), got shape {np.shape(logits)}")
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        fail(name, "logits", f"must be one float column, got {jnp.result_type(logits)}", TypeError)
    values = concrete(logits)
    if values is None:
        return
    if np.isnan(values).any():
        where = np.flatnonzero(np.isnan(values))[:5].tolist()
        fail(name, "logits", f"hold NaN at entries {where}: no distribution to sample")
    if np.isposinf(values).any() or np.isneginf(values).all():
        fail(name, "logits", "hold +inf, or -inf in every entry: no distribution to sample")


def top_k_keep(logits, k):
    """Which tokens top-k sampling keeps: a boolean ``(N_V,)``, true for the ``k`` largest
    entries of ``logits`` (the ``k`` most likely tokens under ``p = softmax(logits)``) and for
    every entry tied with the ``k``-th. ``k = 0`` or ``k ≥ N_V``: every token; a negative ``k``
    is refused (on concrete input; inside ``jit`` it keeps every token)."""
    if _eager(k):
        check_top_k(TOP_K_KEEP, k, "k")
    N_V = logits.shape[-1]
    k = jnp.asarray(k)
    k_eff = jnp.where((k <= 0) | (k > N_V), N_V, k)
    kth = jnp.sort(logits)[::-1][k_eff - 1]  # the k-th largest logit
    return logits >= kth


def top_p_keep(logits, top_p, tau=1.0):
    """Which tokens nucleus sampling keeps: a boolean ``(N_V,)``.

    Tokens are ranked by ``p = softmax(logits)`` (descending; the ranking of ``q ∝ p^{1/τ}`` is the
    same for every τ > 0). A token is kept when the ``q``-mass of the tokens ranked before it is
    below ``top_p``: the smallest prefix of the ranking whose ``q``-mass reaches ``top_p``, and
    always the most likely token. ``top_p = 1``: every token. ``τ = 0``: only the argmax matters;
    ``τ = ∞``: ``q`` is uniform, so the ``⌈top_p · N_V⌉`` most likely tokens are kept.
    ``top_p`` outside (0, 1] or NaN, and τ outside [0, ∞], are refused on concrete input.
    """
    if _eager(top_p):
        check_top_p(TOP_P_KEEP, top_p)
    if _eager(tau):
        check_tau(TOP_P_KEEP, tau)
    N_V = logits.shape[-1]
    tau = jnp.asarray(tau, logits.dtype)
    safe_tau = jnp.where((tau == 0) | jnp.isinf(tau), 1, tau)
    scores = jnp.where(jnp.isinf(tau), 0, (logits - jnp.max(logits)) / safe_tau)
    order = jnp.argsort(-logits, stable=True)  # most likely first; ties by index
    q_sorted = jax.nn.softmax(scores[order])
    mass_before = jnp.cumsum(q_sorted) - q_sorted
    keep_sorted = (mass_before < top_p) | (jnp.arange(N_V) == 0)
    keep_sorted = keep_sorted | (top_p >= 1)
    return jnp.zeros(N_V, bool).at[order].set(keep_sorted)


def sample_token_filtered(key, logits, tau, top_k=0, top_p=1.0):
    """Line 5 of Algorithm 14 (line 6 of Algorithm 15) with top-k and top-p filters: a token from
    ``q ∝ p^{1/τ}`` restricted to the kept tokens and renormalised.

    The dropped tokens get logit ``−∞``, then the paper's draw :func:`sample_token` runs
    unchanged (Gumbel-max over ``logits/τ``): so with nothing dropped the token is the one
    ``sample_token`` draws for the same key. ``τ = 0`` is the argmax (always kept); ``τ = ∞`` is
    uniform over the kept tokens. Returns a 0-d int32 token id.

    Logits that define no distribution (NaN, +∞, or −∞ everywhere) are refused on concrete input,
    as :func:`sample_token` refuses them; inside ``jit`` the token is then ``-1``, as there.
    """
    _check_logits(FILTERED, logits)
    check_key(FILTERED, key)
    if _eager(tau):
        check_tau(FILTERED, tau)
    if _eager(top_k):
        check_top_k(FILTERED, top_k)
    if _eager(top_p):
        check_top_p(FILTERED, top_p)
    keep = top_k_keep(logits, top_k) & top_p_keep(logits, top_p, tau)
    tau = jnp.asarray(tau, logits.dtype)
    inf_tau = jnp.isinf(tau)
    # τ = ∞ is uniform over the kept tokens: equal logits on them, τ = 1.
    kept = jnp.where(keep, jnp.where(inf_tau, 0.0, logits), -jnp.inf)
    # a NaN logit is never kept, yet it leaves no distribution: sample_token's -1 (under jit)
    kept = jnp.where(jnp.isnan(logits), logits, kept)
    return sample_token(key, kept, jnp.where(inf_tau, 1.0, tau))


def stop_at(pieces: Iterable[str], stop: str | None) -> Iterator[str]:
    """Stream text ``pieces`` until ``stop`` appears; yields the text before it, never the stop
    string nor anything after it. A trailing part that could begin ``stop`` is held back until
    the next piece decides it. Stops consuming ``pieces`` as soon as ``stop`` is seen (so a
    generator upstream stops generating). ``stop`` empty or ``None``: every piece unchanged.
    ``stop`` of another type is refused at the call, before any piece is read.
    """
    if stop is not None and not isinstance(stop, str):
        fail(STOP_AT, "stop", f"must be a string or None, got {type(stop).__name__}", TypeError)
    if not isinstance(pieces, Iterable):
        fail(STOP_AT, "pieces", f"must be text pieces, got {type(pieces).__name__}", TypeError)
    return _until(pieces, stop)


def _until(pieces: Iterable[str], stop: str | None) -> Iterator[str]:
    """:func:`stop_at`'s stream (a generator: it reads ``pieces`` only as it is consumed)."""
    if not stop:
        yield from pieces
        return
    pending = ""
    for piece in pieces:
        pending += piece
        at = pending.find(stop)
        if at >= 0:
            if at:
                yield pending[:at]
            return
        # hold back the longest suffix of pending that is a proper prefix of stop
        hold = next(
            (
                n
                for n in range(min(len(stop) - 1, len(pending)), 0, -1)
                if stop.startswith(pending[-n:])
            ),
            0,
        )
        if len(pending) > hold:
            yield pending[: len(pending) - hold]
            pending = pending[len(pending) - hold :]
    if pending:
        yield pending
