"""T5's relative position bias (Raffel et al. 2020, §2.1) as a substitution of Algorithm 4's
line 4 and of the embedding lines that add ``W_p``.

What changes in the paper's text:

- the embedding, ``e ← W_e[:, x[t]] + W_p[:, t]`` (Algorithm 8 lines 2 and 11): no ``W_p``;
  positions enter through the scores only;
- Algorithm 4 line 4, ``S ← KᵀQ``: head h adds a learned scalar for the *bucket* of the relative
  position ``t_z − t_x`` (key position minus query position),
  ``S[t_z, t_x] ← S[t_z, t_x] + R[h, bucket(t_z − t_x)]``; ``R`` is ``(H, n_buckets)``;
- Algorithm 4 line 6, ``Ṽ ← V · softmax(S / √d_attn)``: the scaling is dropped,
  ``Ṽ ← V · softmax(S)`` (T5 folds ``1/√d_attn`` into the initialisation of ``W_q``).

The buckets (:func:`relative_position_bucket`): a bidirectional stack (T5's encoder) gives half
of the ``n_buckets`` to keys before or at the query and half to keys after it; a unidirectional one
(the decoder) gives all of them to keys at or before the query (later keys are masked anyway and
share bucket 0). Of the n buckets of one side, the first ``n/2`` are exact distances 0 … n/2 − 1;
the rest cover the distances from n/2 to ``max_distance`` in logarithmically wider bins,
``n/2 + ⌊log(r / (n/2)) / log(max_distance / (n/2)) · (n − n/2)⌋``, and every distance beyond
shares the last bucket. The logarithm is evaluated in float32, as T5's Mesh TensorFlow code and
transformers evaluate it, so a distance on a bin's boundary falls in the same bucket as theirs.

T5 computes the bias once per stack, from the first layer's ``R``, and adds it in every layer of
that stack; its cross-attention has no bias. :func:`relative_mh_attention` is Algorithm 5 with
these heads, built from :mod:`..practice.kv_attention`'s projection and output;
:func:`biased_attend` is lines 4-6 over stored keys and values (the cached forms).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import MHAttentionParams
from ..paper.checks import check_count, fail
from ..paper.functions import compute_dtype, softmax
from ..practice.kv_attention import output, project
from .checks import check_heads, check_mask, check_matrix

BUCKET = "relative_position_bucket (T5's buckets of t_z − t_x)"
BIAS = "relative_bias (T5's bias at Algorithm 4 line 4)"
RELATIVE = "relative_mh_attention (Algorithm 5 with T5's relative bias at Algorithm 4 line 4)"


def check_buckets(algorithm: str, n_buckets, max_distance, bidirectional: bool) -> int:
    """The bucket hyperparameters: integers with at least one exact and one logarithmic bucket on
    a side (``n ≥ 2`` buckets per side, ``max_distance > n/2``); returns n, the buckets per side."""
    n_buckets = check_count(algorithm, "n_buckets", n_buckets, 4 if bidirectional else 2)
    max_distance = check_count(algorithm, "max_distance", max_distance, 1)
    n = n_buckets // 2 if bidirectional else n_buckets
    if max_distance <= n // 2:
        fail(
            algorithm,
            "max_distance",
            f"= {max_distance} must exceed the {n // 2} exact distances of a side's {n} buckets",
        )
    return n


def relative_position_bucket(relative, *, bidirectional: bool, n_buckets: int, max_distance: int):
    """The bucket ids ``[0, n_buckets)`` (int32) of the relative positions ``t_z − t_x`` (an integer
    array of any shape, key position minus query position), as in the module's docstring."""
    n = check_buckets(BUCKET, n_buckets, max_distance, bidirectional)
    relative = jnp.asarray(relative)
    if not jnp.issubdtype(relative.dtype, jnp.integer):
        fail(BUCKET, "relative", f"must hold integer distances, got dtype {relative.dtype}")
    relative = relative.astype(jnp.int32)
    if bidirectional:  # keys after the query (t_z > t_x) take the upper half
        offset = jnp.where(relative > 0, n, 0)
        r = jnp.abs(relative)
    else:  # keys after the query share bucket 0 (the causal mask removes them)
        offset = 0
        r = jnp.maximum(-relative, 0)
    exact = n // 2
    ratio = jnp.maximum(r, 1).astype(jnp.float32) / np.float32(exact)  # float32, as T5's code
    scale = np.float32(math.log(max_distance / exact))
    logarithmic = exact + (jnp.log(ratio) / scale * np.float32(n - exact)).astype(jnp.int32)
    logarithmic = jnp.minimum(logarithmic, n - 1)  # every distance ≥ max_distance: the last
    return offset + jnp.where(r < exact, r, logarithmic)


def relative_bias(R, t_z, t_x, *, bidirectional: bool, max_distance: int):
    """``B[h, i, j] = R[h, bucket(t_z[i] − t_x[j])]``, shape ``(H, ℓ_z, ℓ_x)``: the bias T5 adds to
    head h's scores ``S[t_z, t_x]``; ``R`` ``(H, n_buckets)``, ``t_z`` and ``t_x`` the key and
    query positions (integer vectors)."""
    if np.ndim(R) != 2:
        fail(BIAS, "R", f"must be (H, n_buckets), got shape {np.shape(R)}")
    for name, t in (("t_z", t_z), ("t_x", t_x)):
        if np.ndim(t) != 1:
            fail(BIAS, name, f"must be a vector of positions, got shape {np.shape(t)}")
    relative = jnp.asarray(t_z)[:, None] - jnp.asarray(t_x)[None, :]  # [t_z, t_x]: t_z − t_x
    buckets = relative_position_bucket(
        relative, bidirectional=bidirectional, n_buckets=np.shape(R)[1], max_distance=max_distance
    )
    return jnp.asarray(R)[:, buckets]


def biased_attend(Q, K, V, B, Mask):
    """Algorithm 4 lines 4-6 for every head h with T5's substitutions, over stored rows:
    ``S^h ← (K^h)ᵀ Q^h + B^h`` (line 4, ``B`` None: no bias), masked (line 5),
    ``Ṽ^h ← V^h softmax(S^h)`` (line 6, unscaled).

    Layout as :func:`..practice.kv_attention.attend`: ``Q`` (H, d_attn, n); ``K`` (H, T, d_attn)
    and ``V`` (H, T, d_mid) as rows (Kᵀ, Vᵀ; one key/value set per head, as T5 has); ``B``
    (H, T, n) or None; ``Mask`` (T, n) boolean or None. Returns ``Ṽ`` (H, d_mid, n). Lines 4-6 run
    in at least float32."""
    c = compute_dtype(V.dtype)
    S = jnp.einsum("hta,han->htn", K.astype(c), Q.astype(c))  # line 4 [h, :, :]
    if B is not None:
        S = S + B.astype(c)  # line 4: T5's relative position bias
    if Mask is not None:
        S = jnp.where(Mask, S, -jnp.inf)  # line 5 [h, :, :]
    A = jax.vmap(softmax)(S)  # line 6 (part: A) [h, :, :]
    V_tilde = jnp.einsum("htm,htn->hmn", V.astype(c), A)  # line 6 [h, :, :], no 1/√d_attn
    return V_tilde.astype(V.dtype)


def relative_mh_attention(X, Z, W: MHAttentionParams, B=None, Mask=None):
    """Algorithm 5 whose heads are Algorithm 4 with T5's substitutions: ``Ṽ`` ``(d_out, ℓ_x)``.

    ``B`` ``(H, ℓ_z, ℓ_x)``: the heads' bias (:func:`relative_bias`), or None (T5's
    cross-attention); ``Mask`` ``(ℓ_z, ℓ_x)`` or None (``Mask ≡ 1``); ``W``'s biases may be None
    (T5 has none). Lines 1-3 and 4 of Algorithm 5 are :mod:`..practice.kv_attention`'s."""
    check_matrix(RELATIVE, "X", X)
    check_matrix(RELATIVE, "Z", Z)
    H, G = check_heads(RELATIVE, W, np.shape(X)[0], np.shape(Z)[0])
    if G != H:
        fail(RELATIVE, "W.W_k", f"holds {G} key sets for {H} heads; T5 has one set per head")
    ell_z, ell_x = np.shape(Z)[1], np.shape(X)[1]
    check_mask(RELATIVE, Mask, ell_z, ell_x)
    if B is not None and np.shape(B) != (H, ell_z, ell_x):
        fail(
            RELATIVE, "B", f"has shape {np.shape(B)}, expected (H, ℓ_z, ℓ_x) = {(H, ell_z, ell_x)}"
        )
    Q, K, V = project(W, X, Z)  # Algorithm 4 lines 1-3, every head
    Mask = None if Mask is None else jnp.asarray(Mask).astype(bool)
    Y = biased_attend(
        Q, K.transpose(0, 2, 1), V.transpose(0, 2, 1), B, Mask
    )  # Algorithm 4 lines 4-6
    return output(W.W_o, W.b_o, Y)  # Algorithm 5 lines 3-4
