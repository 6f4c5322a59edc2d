"""Algorithm 14 for any decoder: line 3's ``DTransformer`` replaced by a function ``x ↦ W_u X``.

The paper's Algorithm 14 (:func:`formal_algorithms.d_inference`) prompts the decoder of Algorithm
10. The same loop prompts every decoder-only family (Llama, …): only line 3's model changes. This
is that substitution, literally: each step runs the whole decoder on the sequence so far (no
cache, as the paper's), samples from the last column with the library's one sampler, and records
the paper's lines (the trace shows ``p``, ``q`` and ``y`` per step as for Algorithm 10).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..paper.checks import check_count, check_key, fail
from ..paper.functions import softmax
from ..paper.inference import (
    check_sampled,
    check_tau,
    sample_token,
    step_key,
    tempered_distribution,
)

D_INFERENCE_WITH = "d_inference_with (Algorithm 14 with line 3's decoder given)"


def d_inference_with(logits_fn, x, key, *, ell_gen, tau=1.0, N_V=None):
    """Algorithm 14, ``y ← DInference(x, θ̂)``, with ``P ← DTransformer(x | θ̂)`` (line 3)
    replaced by ``softmax(logits_fn(x))``.

    ``logits_fn``: token ids ``(ℓ,)`` ↦ logits ``(N_V, ℓ)`` in the paper's orientation (e.g.
    ``functools.partial(llama_logits, theta=θ, rope_base=…)``). ``x``: the prompt, ℓ ≥ 1.
    ``key``, ``ell_gen``, ``tau`` as in :func:`~formal_algorithms.d_inference` (step i draws with
    ``fold_in(key, i)``; τ = 0 argmax, τ = ∞ uniform). Returns the ``ell_gen`` new tokens.
    """
    if not callable(logits_fn):
        fail(
            D_INFERENCE_WITH,
            "logits_fn",
            f"must be callable, got {type(logits_fn).__name__}",
            TypeError,
        )
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.integer):
        fail(D_INFERENCE_WITH, "x", f"must be a non-empty 1-D array of token ids, got {x!r:.80}")
    check_key(D_INFERENCE_WITH, key)
    ell_gen = check_count(D_INFERENCE_WITH, "ell_gen", ell_gen)
    tau = check_tau(D_INFERENCE_WITH, tau)
    ell = x.shape[0]  # line 1
    x = x.astype(np.int32)
    for i in range(ell_gen):  # line 2 (i is the paper's i − 1)
        y = _step(logits_fn, x, step_key(key, i), tau, N_V)
        check_sampled(D_INFERENCE_WITH, y, i)
        x = np.append(x, np.int32(y))  # line 6: x ← [x, y]
    return jnp.asarray(x[ell:])  # line 8: y = x[ℓ+1 : ℓ+ℓ_gen]


def _step(logits_fn, x, key, tau, N_V):
    """Lines 3-5 of Algorithm 14 with the given decoder."""
    logits = logits_fn(jnp.asarray(x))  # line 3 (part: logits)
    if jnp.ndim(logits) != 2 or logits.shape[1] != x.shape[0]:
        fail(
            D_INFERENCE_WITH,
            "logits_fn",
            f"returned shape {jnp.shape(logits)} for {x.shape[0]} "
            "tokens; expected (N_V, ℓ), tokens as columns",
        )
    if N_V is not None and logits.shape[0] != N_V:
        fail(
            D_INFERENCE_WITH, "logits_fn", f"returned {logits.shape[0]} rows, expected N_V = {N_V}"
        )
    p = softmax(logits[:, -1])  # lines 3-4: p ← P[:, ℓ + i − 1]  # noqa: F841
    q = tempered_distribution(logits[:, -1], tau)  # line 5 (part): q ∝ p^{1/τ}  # noqa: F841
    return int(sample_token(key, logits[:, -1], tau))  # line 5: y drawn from q
