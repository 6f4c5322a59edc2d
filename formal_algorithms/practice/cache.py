"""Key/value-cache forms of Algorithm 14 (DInference) and Algorithm 15 (EDInference).

The literal algorithms (:mod:`formal_algorithms.inference`) run the whole transformer on the
growing sequence at every step. Because attention is causal, column t of Algorithm 10 (and of
Algorithm 8's decoder) depends only on the columns ≤ t, and the keys and values of a column never
change once computed. So each step here computes only the new column: its embedding at its true
position, per layer its queries/keys/values, the keys and values written into a cache at that
position, attention over the cached positions ≤ t (a mask built from positions,
:func:`~formal_algorithms.attention.causal_mask`), W_o, the MLP, the final norm and W_u. The
step is built from the same primitives as Algorithms 4-10 and is tested column by column against
the full forward (to 1e-12 in float64) and token for token against the literal algorithms.

Decisions (each documented in algorithms.md):

- **Same draws.** Step i samples with ``fold_in(key, i)`` through the same
  :func:`~formal_algorithms.inference.sample_token` as the literal algorithms, so the tokens are
  the same for the same key. The logits agree to rounding (~1e-16 relative in float64), so the
  only way to differ is an exact tie in ``argmax(scores + Gumbel)`` at rounding level.
- **Cache layout.** One fixed-size cache of ℓ_max positions per layer, shapes
  ``(H, ℓ_max, d_attn)`` for keys and ``(H, ℓ_max, d_mid)`` for values: row t holds the key
  column ``k_t`` (so the cache is Kᵀ, Vᵀ of Algorithm 4), one contiguous row per write.
  Unwritten rows are masked out, never read.
- **Compile once.** The whole generation (prefill, the loop over steps, sampling) is one jitted
  function; the number of steps and τ are runtime values, prompts are right-padded to a length
  bucket (powers of two from 8, capped at ℓ_max). So a new ℓ_gen, τ or prompt length within the
  bucket reuses the executable; :func:`compiled_count` reads how many executables JAX holds.
- **Batches and padding.** Prompts of different lengths are right-padded; prompt b's token t
  sits at its true position t, and its first new token at position ℓ_b (never at a shifted or
  zero position). The padding's keys and values are written to rows ≥ ℓ_b in the prefill and
  are overwritten by generated tokens before any query can see them (a query at position t sees
  rows ≤ t only). A batch is ``vmap`` of the one-prompt generation, so it gives the same tokens as
  one prompt at a time with the same per-prompt keys. For Algorithm 15 the contexts z are
  right-padded as well and a key-padding mask keeps the padding out of the encoder's
  self-attention and the decoder's cross-attention.
- **EDInference.** z is encoded once (Algorithm 8's lines 1-9, which the literal form repeats at
  every step with the same result); the cross-attention keys and values of Z are computed once
  per decoder layer; only the decoder's self-attention cache grows. The loop is a
  ``while_loop`` that stops at the first eos or at the length guard, as the literal form does.
- **No sliding window.** The cached forms require ``ℓ + ℓ_gen − 1 ≤ ℓ_max``; a sliding window
  shifts every position, which invalidates every cached key, so it is only in the literal form.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import ed_decoder_layer, mlp, post_ln_layer, unembedding_matrix
from ..paper.attention import MHAttentionParams
from ..paper.checks import (
    check_count,
    check_key,
    check_token_dtype,
    check_tokens,
    concrete,
    fail,
)
from ..paper.embeddings import embed
from ..paper.functions import gelu, relu, softmax
from ..paper.inference import (
    D_INFERENCE,
    ED_INFERENCE,
    check_max_length,
    check_sampled,
    check_tau,
    sample_token,
    special_tokens,
    step_key,
    tempered_distribution,
)
from ..paper.normalisation import EPS, layer_norm_columns
from ..paper.parameters import DTransformerParams, EDTransformerParams
from ..paper.validation import check_params
from .kv_attention import (
    KV,
    cached_attention,
    cached_decoder_attention,
    paper_projection,
    project,
)

MIN_BUCKET = 8


def length_bucket(ell: int, ell_max: int) -> int:
    """The padded length for a prompt (or context) of length ℓ: the next power of two ≥ max(ℓ, 8),
    capped at ℓ_max. Lengths in one bucket share one compiled generation."""
    return min(ell_max, max(MIN_BUCKET, 1 << (ell - 1).bit_length()))


class KVCache(NamedTuple):
    """Self-attention keys and values of every layer, one row per position.

    ``K[l][h, t]`` is head h's key column ``k_t = W_k^h x̃_t + b_k^h`` of position t in layer l
    (Algorithm 4 line 2, stored transposed), ``V[l][h, t]`` its value column (line 3).
    """

    K: tuple  # L arrays (H, ℓ_max, d_attn)
    V: tuple  # L arrays (H, ℓ_max, d_mid)


class CrossCache(NamedTuple):
    """Cross-attention keys and values of the encoded context Z, per decoder layer (Alg 8 line 16)."""

    K: tuple  # L_dec arrays (H, ℓ_z, d_attn): rows k_t = W_k^h Z[:, t] + b_k^h
    V: tuple  # L_dec arrays (H, ℓ_z, d_mid)
    valid: jax.Array  # (ℓ_z,) bool: True at the real (not padded) positions of z


def init_kv_cache(theta, dtype=None) -> KVCache:
    """An empty (zero) cache of ℓ_max positions for θ of Algorithm 10 or Algorithm 8's decoder."""
    if not isinstance(theta, (DTransformerParams, EDTransformerParams)):
        fail(
            "init_kv_cache",
            "theta",
            "must be θ of Algorithm 10 or 8 (a decoder: "
            f"DTransformerParams or EDTransformerParams), got {type(theta).__name__}",
            TypeError,
        )
    ell_max = theta.W_p.shape[1]
    dtype = theta.W_e.dtype if dtype is None else dtype
    Ws = [_self_attention_params(layer) for layer in _decoder_layers(theta)]
    K = tuple(jnp.zeros((W.W_k.shape[0], ell_max, W.W_k.shape[1]), dtype) for W in Ws)
    V = tuple(jnp.zeros((W.W_v.shape[0], ell_max, W.W_v.shape[1]), dtype) for W in Ws)
    return KVCache(K, V)


def _decoder_layers(theta):
    return theta.dec if isinstance(theta, EDTransformerParams) else theta.layers


def _self_attention_params(layer) -> MHAttentionParams:
    return layer.W_dec if hasattr(layer, "W_dec") else layer.W


# ------------------------------------------------------------------- attention over a cache


def _self_attention(W: MHAttentionParams, X, start, K_l, V_l):
    """Causal self-attention of the columns ``X`` (positions start..start+n−1) over the cache
    (:func:`.kv_attention.cached_attention` with the paper's projection)."""
    positions = start + jnp.arange(X.shape[1])
    A, kv = cached_attention(paper_projection(W), W.W_o, W.b_o, X, positions, KV(K_l, V_l))
    return A, kv.K, kv.V


def _embed_at(tokens, start, theta):
    """Eq. 1 for columns at positions start..start+n−1: ``W_e[:, x[t]] + W_p[:, t]``."""
    W_p = jax.lax.dynamic_slice_in_dim(theta.W_p, start, tokens.shape[0], axis=1)
    return theta.W_e[:, tokens] + W_p


def _check_block(algorithm, tokens, start, theta, cache):
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    check_tokens(algorithm, "tokens", tokens, N_V, ell_max)
    s = concrete(start)
    if s is not None and (s.ndim != 0 or s < 0 or s + tokens.shape[0] > ell_max):
        fail(
            algorithm,
            "start",
            f"= {s} with {tokens.shape[0]} tokens does not fit positions [0, ell_max = {ell_max})",
        )
    expected = init_kv_cache_shapes(theta)
    if not isinstance(cache, KVCache):
        fail(
            algorithm,
            "cache",
            f"must be a KVCache (init_kv_cache(θ)), got {type(cache).__name__}",
            TypeError,
        )
    actual = [np.shape(a) for a in (*cache.K, *cache.V)]
    if actual != expected:
        fail(algorithm, "cache", f"has shapes {actual}, expected {expected} (see init_kv_cache)")


def init_kv_cache_shapes(theta):
    """The shapes of :func:`init_kv_cache`'s arrays, keys of every layer first, then values."""
    shapes = jax.eval_shape(lambda: init_kv_cache(theta))
    return [a.shape for group in shapes for a in group]


# ------------------------------------------------------------------ Algorithm 10, incrementally


def _d_block(tokens, start, theta, cache, activation, eps):
    """Algorithm 10, lines 1-11 for the columns at start..start+n−1, keys and values cached."""
    X = _embed_at(tokens, start, theta)  # lines 1-3, at the true positions
    K, V = [], []
    for layer, K_l, V_l in zip(theta.layers, cache.K, cache.V, strict=True):  # line 4
        X_tilde = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 5
        A, K_l, V_l = _self_attention(layer.W, X_tilde, start, K_l, V_l)
        X = X + A  # line 6
        X_tilde = layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 7
        X = X + mlp(
            X_tilde, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation
        )  # line 8
        K.append(K_l)
        V.append(V_l)
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    logits = unembedding_matrix(theta) @ X  # line 11 (part: logits)
    return logits, KVCache(tuple(K), tuple(V))


def d_cached_logits(
    tokens, start, theta: DTransformerParams, cache: KVCache, *, activation=gelu, eps=EPS
):
    """Algorithm 10's logits ``W_u X`` for the columns at positions start..start+n−1, given a cache
    holding the keys and values of positions < start. Returns ``(logits (N_V, n), new cache)``.

    Prefill is ``d_cached_logits(x, 0, θ, init_kv_cache(θ))``; a step is one token at
    ``start = length so far``. Column j equals column ``start + j`` of
    ``d_transformer_logits(x_full, θ)`` (the causal mask makes later columns irrelevant).
    """
    _check_block("d_cached_logits (Algorithm 10, cached)", tokens, start, theta, cache)
    return _d_block(jnp.asarray(tokens), start, theta, cache, activation, eps)


def _d_generate(theta, prompt, ell, key, n_steps, tau, activation, eps):
    """Algorithm 14 with a cache: prompt (P,) right-padded, true length ell, n_steps ≥ 1 tokens."""
    cache = init_kv_cache(theta)
    logits, cache = _d_block(prompt, 0, theta, cache, activation, eps)  # prefill
    p = jax.lax.dynamic_index_in_dim(logits, ell - 1, axis=1, keepdims=False)  # P[:, ℓ−1]
    out = jnp.zeros(theta.W_p.shape[1], jnp.int32)

    def step(i, carry):  # lines 2-6, one pass: sample y_i, then the next column of P
        logits, cache, out = carry
        p = softmax(logits)  # line 4: p, for the trace (unused: XLA drops it)  # noqa: F841
        q = tempered_distribution(logits, tau)  # line 5 (part): q ∝ p^{1/τ}  # noqa: F841
        y = sample_token(step_key(key, i), logits, tau)  # line 5
        out = out.at[i].set(y)  # line 6
        logits, cache = _d_block(
            y[None], ell + i, theta, cache, activation, eps
        )  # line 3 (part: logits)
        return logits[:, 0], cache, out

    p, cache, out = jax.lax.fori_loop(0, n_steps - 1, step, (p, cache, out))
    y = sample_token(step_key(key, n_steps - 1), p, tau)  # the last token is never fed back
    return out.at[n_steps - 1].set(y)


def _compiled(generate):
    """``generate(θ, prompt, ℓ, key, n, τ, activation, eps)`` jitted for one prompt and, vmapped,
    for a batch: ``activation`` and ε static, everything else a runtime value."""

    def one(theta, prompt, ell, key, n, tau, *, activation, eps):
        return generate(theta, prompt, ell, key, n, tau, activation, eps)

    def batch(theta, prompts, ells, keys, n, tau, *, activation, eps):
        def each(prompt, ell, key):
            return generate(theta, prompt, ell, key, n, tau, activation, eps)

        return jax.vmap(each)(prompts, ells, keys)

    static = dict(static_argnames=("activation", "eps"))
    return jax.jit(one, **static), jax.jit(batch, **static)


_d_generate_one, _d_generate_batch = _compiled(_d_generate)


def _check_sequences(algorithm, expected, theta, sequences) -> int:
    """θ of the ``expected`` class, and each named sequence's ids and dtype; returns ℓ_max."""
    check_params(theta, algorithm, expected)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    for name, x in sequences:
        check_tokens(algorithm, name, x, N_V, ell_max)
        check_token_dtype(algorithm, name, x, N_V)
    return ell_max


def _check_d(theta, prompts, ell_gen, tau):
    ell_max = _check_sequences(D_INFERENCE, DTransformerParams, theta, prompts)
    ell_gen = check_count(D_INFERENCE, "ell_gen", ell_gen)
    longest = max(np.shape(x)[0] for _, x in prompts)
    if longest + ell_gen - 1 > ell_max:
        fail(
            D_INFERENCE,
            "ell_gen",
            f"= {ell_gen} with a prompt of length {longest} would run DTransformer on "
            f"{longest + ell_gen - 1} tokens > ell_max = {ell_max}; shorten the prompt or "
            f"ell_gen (the cached form has no sliding window)",
        )
    return ell_gen, check_tau(D_INFERENCE, tau)


def _first_bad(out, b=None) -> str:
    """Where the first ``-1`` (no distribution, see :func:`sample_token`) is, for the message."""
    where = np.argwhere(np.asarray(out) < 0)
    if not len(where):
        return ""
    *row, i = where[0].tolist()
    row = row[0] if row else b
    return f"{i}" + ("" if row is None else f" of sequence {row}")


def _pad(sequences, length):
    out = np.zeros((len(sequences), length), np.int32)
    for b, x in enumerate(sequences):
        out[b, : len(x)] = x
    return out


def compiled_count(form: str) -> int:
    """How many executables JAX's own cache holds for the cached generation ``form``
    (``"d_generate"`` or ``"ed_generate"``, one prompt and batched together): one per length
    bucket, batch size, dtype and static option; a new ℓ_gen, τ or key must not add one."""
    functions = {
        "d_generate": (_d_generate_one, _d_generate_batch),
        "ed_generate": (_ed_generate_one, _ed_generate_batch),
    }
    if form not in functions:
        fail("compiled_count", "form", f"= {form!r} is not one of {sorted(functions)}")
    return sum(f._cache_size() for f in functions[form])


def d_inference_cached(
    x, theta: DTransformerParams, key, *, ell_gen, tau=1.0, activation=gelu, eps=EPS
):
    """Algorithm 14 with a key/value cache: the same tokens as :func:`~.inference.d_inference`
    for the same arguments and key (without ``window``). Returns ``(ell_gen,)`` in x's dtype.

    One compiled executable per (prompt-length bucket, dtype, activation, eps): ℓ_gen, τ, the key
    and the prompt length within its bucket are runtime values.
    """
    x = np.asarray(x)
    ell_gen, tau = _check_d(theta, [("x", x)], ell_gen, tau)
    check_key(D_INFERENCE, key)
    if ell_gen == 0:
        return jnp.zeros(0, x.dtype)
    ell_max = theta.W_p.shape[1]
    prompt = _pad([x], length_bucket(x.shape[0], ell_max))[0]
    out = _d_generate_one(
        theta, prompt, x.shape[0], key, ell_gen, tau, activation=activation, eps=eps
    )
    out = np.asarray(out)[:ell_gen]
    check_sampled(D_INFERENCE, out, _first_bad(out), theta)  # -1: no distribution to sample
    return jnp.asarray(out.astype(x.dtype))


def d_inference_cached_batch(
    prompts, theta: DTransformerParams, keys, *, ell_gen, tau=1.0, activation=gelu, eps=EPS
):
    """Algorithm 14 with a cache for a batch of prompts of different lengths.

    ``prompts``: a sequence of B 1-D token arrays; ``keys``: B keys (``jax.random.split(key, B)``);
    prompt b uses ``keys[b]``. Returns a list of B int32 arrays (as :func:`ed_inference_cached_batch`:
    a batch in, a list out), entry b equal to ``d_inference_cached(prompts[b], θ, keys[b], ...)``;
    ``jnp.stack`` makes them one ``(B, ell_gen)`` array. Prompts are right-padded to the bucket of
    the longest one; each keeps its true positions.
    """
    xs = [np.asarray(x) for x in prompts]
    if not xs:
        fail(D_INFERENCE, "prompts", "is empty; pass at least one prompt")
    ell_gen, tau = _check_d(theta, [(f"prompts[{b}]", x) for b, x in enumerate(xs)], ell_gen, tau)
    keys = _check_keys(D_INFERENCE, keys, len(xs))
    if ell_gen == 0:
        return [jnp.zeros(0, jnp.int32) for _ in xs]
    ell_max = theta.W_p.shape[1]
    padded = _pad(xs, length_bucket(max(x.shape[0] for x in xs), ell_max))
    ells = np.asarray([x.shape[0] for x in xs], np.int32)
    out = _d_generate_batch(theta, padded, ells, keys, ell_gen, tau, activation=activation, eps=eps)
    out = np.asarray(out)[:, :ell_gen]
    check_sampled(D_INFERENCE, out, _first_bad(out), theta)
    return [jnp.asarray(row) for row in out]


def _check_keys(algorithm, keys, B):
    if not isinstance(keys, jax.Array):
        keys = np.asarray(keys)
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    shape = (B,) if typed else (B, 2)
    if keys.shape != shape or not (typed or keys.dtype == np.uint32):
        fail(
            algorithm,
            "keys",
            f"must hold one key per sequence, e.g. jax.random.split(key, {B}); got dtype "
            f"{keys.dtype} shape {keys.shape}",
            TypeError,
        )
    return jnp.asarray(keys)


# ------------------------------------------------------------------- Algorithm 8, incrementally


def _ed_encode_padded(z, ell_z, theta, activation, eps):
    """Lines 1-9 of Algorithm 8 on a right-padded z: padding is masked out as a context (key)."""
    Z = embed(z, theta.W_e, theta.W_p)  # lines 1-3
    valid = jnp.arange(z.shape[0]) < ell_z
    Mask = jnp.broadcast_to(valid[:, None], (z.shape[0], z.shape[0]))  # Mask[t_z, t_x] = z real
    for layer in theta.enc:  # line 4
        Z = post_ln_layer(Z, layer, Mask, activation, eps)  # lines 5-8
    return Z, valid


def ed_cross_cache(Z, theta: EDTransformerParams, valid=None) -> CrossCache:
    """The cross-attention keys and values of the encoded context ``Z`` (d_e, ℓ_z) for every
    decoder layer (Algorithm 8 line 16, Algorithm 4 lines 2-3), computed once per z.
    ``valid`` (ℓ_z,) marks real positions when z was padded (default: all real)."""
    valid = jnp.ones(Z.shape[1], bool) if valid is None else valid
    rows = [project(layer.W_ed, Z)[1:] for layer in theta.dec]  # K, V of Z per layer
    K = tuple(K.transpose(0, 2, 1) for K, _ in rows)
    return CrossCache(K, tuple(V.transpose(0, 2, 1) for _, V in rows), valid)


def _ed_block(tokens, start, theta, cache, cross, eps, activation=relu):
    """Algorithm 8, lines 10-21 for the columns at start..start+n−1, keys and values cached."""
    X = _embed_at(tokens, start, theta)  # lines 10-12, at the true positions
    n = tokens.shape[0]
    K, V = [], []
    layers = zip(theta.dec, cache.K, cache.V, cross.K, cross.V, strict=True)
    positions = start + jnp.arange(n)
    for layer, K_l, V_l, Kz, Vz in layers:  # line 13
        attention, written = cached_decoder_attention(positions, KV(K_l, V_l))
        Mask = jnp.broadcast_to(cross.valid[:, None], (Kz.shape[1], n))  # Mask ≡ 1 on real z
        X = ed_decoder_layer(
            X, KV(Kz, Vz), layer, None, activation, eps, Mask, attention=attention
        )  # lines 14-19
        (kv,) = written
        K.append(kv.K)
        V.append(kv.V)
    logits = unembedding_matrix(theta) @ X  # line 21 (part: logits)
    return logits, KVCache(tuple(K), tuple(V))


def ed_cached_logits(
    tokens,
    start,
    theta: EDTransformerParams,
    cache: KVCache,
    cross: CrossCache,
    *,
    activation=relu,
    eps=EPS,
):
    """Algorithm 8's logits for the decoder columns at positions start..start+n−1, given the
    decoder cache of positions < start and the context's :func:`ed_cross_cache`.
    Returns ``(logits (N_V, n), new cache)``."""
    algorithm = "ed_cached_logits (Algorithm 8, cached)"
    _check_block(algorithm, tokens, start, theta, cache)
    _check_cross(algorithm, theta, cross)
    return _ed_block(jnp.asarray(tokens), start, theta, cache, cross, eps, activation)


def _check_cross(algorithm, theta, cross):
    """``cross`` must be :func:`ed_cross_cache` of θ's decoder: per layer K (H, ℓ_z, d_attn) and V
    (H, ℓ_z, d_mid), with ``valid`` (ℓ_z,)."""
    ell_z = np.shape(cross.valid)[0] if np.ndim(cross.valid) == 1 else None
    Ws = [layer.W_ed for layer in theta.dec]
    expected = [(W.W_k.shape[0], ell_z, W.W_k.shape[1]) for W in Ws]
    expected += [(W.W_v.shape[0], ell_z, W.W_v.shape[1]) for W in Ws]
    actual = [np.shape(a) for a in (*cross.K, *cross.V)]
    if ell_z is None or actual != expected:
        fail(
            algorithm,
            "cross",
            f"has shapes {actual} (keys, then values) and valid {np.shape(cross.valid)}; θ's "
            f"L_dec = {len(Ws)} decoder layers need {expected} (see ed_cross_cache)",
        )


def _ed_generate(theta, z, ell_z, key, max_length, tau, activation, eps):
    """Algorithm 15 with caches: z (P,) right-padded, true length ell_z. Returns (x̂ buffer, length)."""
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    tokens = special_tokens(N_V)
    Z, valid = _ed_encode_padded(z, ell_z, theta, activation, eps)  # encode once
    cross = ed_cross_cache(Z, theta, valid)  # cross-attention K, V once
    out = jnp.zeros(ell_max + 1, jnp.int32).at[0].set(tokens["bos_token"])  # line 1

    def more(carry):  # Alg 15's `while y ≠ eos`, and the length guard
        i, _, _, done = carry
        return jnp.logical_not(done) & (i + 1 < max_length)

    def step(carry):  # lines 3-7, one pass: x̂ has i + 1 tokens; feed x̂[i] at i, sample x̂[i+1]
        i, cache, out, _ = carry
        token = jax.lax.dynamic_slice_in_dim(out, i, 1)
        logits, cache = _ed_block(
            token, i, theta, cache, cross, eps, activation
        )  # line 4 (part: logits)
        p = softmax(logits[:, 0])  # lines 4-5: p, for the trace (unused)  # noqa: F841
        q = tempered_distribution(logits[:, 0], tau)  # line 6 (part)  # noqa: F841
        y = sample_token(step_key(key, i), logits[:, 0], tau)  # line 6
        out = out.at[i + 1].set(y)  # line 7
        return i + 1, cache, out, y == tokens["eos_token"]

    carry = (jnp.int32(0), init_kv_cache(theta), out, jnp.bool_(False))  # (i, cache, x̂, y = eos)
    i, _, out, _ = jax.lax.while_loop(more, step, carry)
    return out, i + 1


_ed_generate_one, _ed_generate_batch = _compiled(_ed_generate)


def _check_ed(theta, contexts, tau, max_length):
    ell_max = _check_sequences(ED_INFERENCE, EDTransformerParams, theta, contexts)
    return check_tau(ED_INFERENCE, tau), check_max_length(ED_INFERENCE, max_length, ell_max)


def ed_inference_cached(
    z, theta: EDTransformerParams, key, *, tau=1.0, max_length=None, activation=relu, eps=EPS
):
    """Algorithm 15 with caches: the same ``x̂`` as :func:`~.inference.ed_inference` for the same
    arguments and key (including the ``max_length`` guard). One compiled executable per
    context-length bucket and dtype; τ, ``max_length`` and the key are runtime values."""
    z = np.asarray(z)
    tau, max_length = _check_ed(theta, [("z", z)], tau, max_length)
    check_key(ED_INFERENCE, key)
    padded = _pad([z], length_bucket(z.shape[0], theta.W_p.shape[1]))[0]
    out, length = _ed_generate_one(
        theta, padded, z.shape[0], key, max_length, tau, activation=activation, eps=eps
    )
    out = np.asarray(out)[: int(length)]
    check_sampled(ED_INFERENCE, out, _first_bad(out), theta)
    return jnp.asarray(out.astype(z.dtype))


def ed_inference_cached_batch(
    contexts,
    theta: EDTransformerParams,
    keys,
    *,
    tau=1.0,
    max_length=None,
    activation=relu,
    eps=EPS,
) -> list:
    """Algorithm 15 with caches for a batch of contexts of different lengths.

    ``contexts``: B 1-D token arrays; ``keys``: B keys, context b uses ``keys[b]``. Returns a list
    of B int32 arrays, element b equal to ``ed_inference_cached(contexts[b], θ, keys[b], ...)``.
    The loop runs until every sequence has stopped; finished ones are frozen.
    """
    zs = [np.asarray(z) for z in contexts]
    if not zs:
        fail(ED_INFERENCE, "contexts", "is empty; pass at least one context")
    named = [(f"contexts[{b}]", z) for b, z in enumerate(zs)]
    tau, max_length = _check_ed(theta, named, tau, max_length)
    keys = _check_keys(ED_INFERENCE, keys, len(zs))
    padded = _pad(zs, length_bucket(max(z.shape[0] for z in zs), theta.W_p.shape[1]))
    ell_zs = np.asarray([z.shape[0] for z in zs], np.int32)
    out, lengths = _ed_generate_batch(
        theta, padded, ell_zs, keys, max_length, tau, activation=activation, eps=eps
    )
    out, lengths = np.asarray(out), np.asarray(lengths)
    for b in range(len(zs)):
        check_sampled(
            ED_INFERENCE, out[b, : lengths[b]], _first_bad(out[b, : lengths[b]], b), theta
        )
    return [jnp.asarray(out[b, : lengths[b]]) for b in range(len(zs))]
