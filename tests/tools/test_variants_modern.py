"""Today's substitutions of the paper's lines (issue 17): RoPE, grouped-query attention, gated
MLPs, ALiBi, factorised embeddings and cross-layer sharing.

Each equation is checked against an independent numpy float64 evaluation written here over the
paper's indices (explicit rotation matrices, a loop over heads, the printed formulas), or against
the paper's own algorithm where the variant must reduce to it; the property toolkit checks
causality and cached = uncached decoding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import paper_numpy as ref
import pytest

import formal_algorithms as fa
from formal_algorithms.families.llama import (
    Decoder,
    init_llama,
    init_llama_cache,
    llama_cached_logits,
    llama_logits,
)
from formal_algorithms.paper.attention import AttentionParams, MHAttentionParams
from formal_algorithms.testing.invariants import (
    check_causal_jacobian,
    check_causal_tokens,
    check_incremental_matches_full,
)
from formal_algorithms.variants.alibi import alibi_mh_attention, alibi_slopes
from formal_algorithms.variants.factorised import factorised_embed, shared_layers
from formal_algorithms.variants.gated_mlp import gated_mlp, silu
from formal_algorithms.variants.grouped_attention import expand_groups, grouped_attention
from formal_algorithms.variants.rope import interleaved_to_half_split, rope, rope_attention


def _rng(seed=0):
    return np.random.default_rng(seed)


def _rotation(d, t, base):
    """R(t) as an explicit (d, d) matrix: rows i and i + d/2 rotate by t · base^(−2i/d)."""
    R = np.zeros((d, d))
    for i in range(d // 2):
        a = t * base ** (-2 * i / d)
        j = i + d // 2
        R[i, i], R[i, j], R[j, i], R[j, j] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return R


def _mha_params(rng, H, G, d_x, d_attn, d_out, bias=True):
    def w(*shape):
        return jnp.asarray(rng.normal(size=shape) / math.sqrt(shape[-1]))

    def b(*shape):
        return jnp.asarray(rng.normal(size=shape)) if bias else None

    return MHAttentionParams(
        w(H, d_attn, d_x), b(H, d_attn), w(G, d_attn, d_x), b(G, d_attn), w(G, d_attn, d_x),
        b(G, d_attn), w(d_out, H * d_attn), b(d_out),
    )  # fmt: skip


# ------------------------------------------------------------------------------------- RoPE


def test_rope_is_the_rotation_matrix_per_column():
    rng = _rng(1)
    X = rng.normal(size=(8, 5))
    t = np.array([0, 3, 7, 100, 4097])
    expected = np.stack([_rotation(8, t[j], 1e4) @ X[:, j] for j in range(5)], axis=1)
    np.testing.assert_allclose(np.asarray(rope(jnp.asarray(X), t, 1e4)), expected, atol=1e-12)


def test_rope_scores_depend_only_on_the_position_difference():
    rng = _rng(2)
    q, k = rng.normal(size=(16, 1)), rng.normal(size=(16, 1))

    def score(tq, tk):
        return float((rope(jnp.asarray(k), [tk], 1e5).T @ rope(jnp.asarray(q), [tq], 1e5))[0, 0])

    assert score(9, 4) == pytest.approx(score(109, 104), abs=1e-11)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-3)


def test_rope_attention_against_numpy():
    rng = _rng(3)
    W = AttentionParams(*(jnp.asarray(rng.normal(size=s)) for s in
                          [(4, 6), (4,), (4, 5), (4,), (3, 5), (3,)]))  # fmt: skip
    X, Z = rng.normal(size=(6, 3)), rng.normal(size=(5, 4))
    t_x, t_z = np.array([5, 6, 7]), np.array([0, 2, 4, 6])
    Mask = t_z[:, None] <= t_x[None, :]
    Q = np.stack([_rotation(4, t_x[j], 1e4) @ (W.W_q @ X[:, j] + W.b_q) for j in range(3)], 1)
    K = np.stack([_rotation(4, t_z[j], 1e4) @ (W.W_k @ Z[:, j] + W.b_k) for j in range(4)], 1)
    V = np.asarray(W.W_v) @ Z + np.asarray(W.b_v)[:, None]
    S = np.where(Mask, K.T @ Q / 2.0, -np.inf)
    A = np.exp(S - S.max(0)) / np.exp(S - S.max(0)).sum(0)
    got = rope_attention(jnp.asarray(X), jnp.asarray(Z), W, Mask, t_x=t_x, t_z=t_z, base=1e4)
    np.testing.assert_allclose(np.asarray(got), V @ A, atol=1e-12)


def test_interleaved_to_half_split_undoes_llama_cpp_permutation():
    """llama.cpp stores W_q, W_k for interleaved pairs (2i, 2i+1); undone, the half-split
    rotation of the original rows equals the interleaved rotation of the stored rows."""
    rng = _rng(4)
    H, d, d_in = 3, 8, 5
    W = rng.normal(size=(H * d, d_in))
    # llama.cpp's conversion, written from its description: per head, row i of the first half
    # and row i of the second half become rows 2i and 2i+1.
    stored = np.concatenate([np.stack([w[: d // 2], w[d // 2 :]], 1).reshape(d, d_in)
                             for w in W.reshape(H, d, d_in)])  # fmt: skip
    np.testing.assert_array_equal(interleaved_to_half_split(stored, H), W)
    x, t = rng.normal(size=d_in), 11
    for h in range(H):
        q_half = np.asarray(rope(jnp.asarray(W[h * d : (h + 1) * d] @ x)[:, None], [t], 1e4))[:, 0]
        q_int = stored[h * d : (h + 1) * d] @ x
        rotated = q_int.copy()
        for i in range(d // 2):  # interleaved RoPE: pair (2i, 2i+1)
            a = t * 1e4 ** (-2 * i / d)
            c, s = math.cos(a), math.sin(a)
            rotated[2 * i] = c * q_int[2 * i] - s * q_int[2 * i + 1]
            rotated[2 * i + 1] = s * q_int[2 * i] + c * q_int[2 * i + 1]
        np.testing.assert_allclose(rotated[0::2], q_half[: d // 2], atol=1e-12)
        np.testing.assert_allclose(rotated[1::2], q_half[d // 2 :], atol=1e-12)


def test_rope_errors_name_the_argument():
    with pytest.raises(ValueError, match="rope: argument 'X' has 3 rows, an odd number"):
        rope(jnp.ones((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="argument 'positions'"):
        rope(jnp.ones((4, 2)), [0, 1, 2])


# ---------------------------------------------------------------- grouped-query attention


@pytest.mark.parametrize("G", [1, 2, 6])
def test_grouped_attention_against_a_loop_over_heads(G):
    rng = _rng(5 + G)
    H, d, ell = 6, 7, 4
    W = _mha_params(rng, H, G, d, 3, d)
    X = rng.normal(size=(d, ell))
    Mask = np.triu(np.ones((ell, ell), bool))
    heads = []
    for h in range(H):  # Algorithm 5 line 2 with the key/value set of h's group
        g = h // (H // G)
        Wg = [np.asarray(a) for a in (W.W_q[h], W.b_q[h], W.W_k[g], W.b_k[g], W.W_v[g], W.b_v[g])]
        heads.append(ref.attention(X, X, *Wg, Mask))
    expected = np.asarray(W.W_o) @ np.concatenate(heads) + np.asarray(W.b_o)[:, None]
    got = grouped_attention(jnp.asarray(X), jnp.asarray(X), W, Mask)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12)
    # the same as the paper's Algorithm 5 with each key/value set repeated over its group
    paper = fa.mh_attention(jnp.asarray(X), jnp.asarray(X), expand_groups(W), Mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(paper), atol=1e-12)


def test_grouped_attention_bias_free_and_rope_is_causal():
    rng = _rng(9)
    W = _mha_params(rng, 4, 2, 8, 4, 8, bias=False)
    ell = 5
    Mask = fa.unidirectional_mask(ell)
    X = jnp.asarray(rng.normal(size=(8, ell)))
    check_causal_jacobian(lambda X: grouped_attention(X, X, W, Mask, rope_base=1e4), X)
    zeros = _mha_params(rng, 4, 2, 8, 4, 8)._replace(W_q=W.W_q, W_k=W.W_k, W_v=W.W_v, W_o=W.W_o)
    zeros = zeros._replace(**{f: jnp.zeros_like(getattr(zeros, f)) for f in ("b_q", "b_k", "b_v",
                                                                             "b_o")})  # fmt: skip
    np.testing.assert_allclose(
        np.asarray(grouped_attention(X, X, W, Mask, rope_base=1e4)),
        np.asarray(grouped_attention(X, X, zeros, Mask, rope_base=1e4)), atol=1e-12,
    )  # fmt: skip  # None biases are zero biases


def test_grouped_attention_rejects_groups_that_do_not_divide_the_heads():
    W = _mha_params(_rng(10), 6, 4, 5, 3, 5)
    with pytest.raises(ValueError, match="grouped_attention .* argument 'W'"):
        grouped_attention(jnp.ones((5, 2)), jnp.ones((5, 2)), W)


# ------------------------------------------------------------------------------ gated MLP


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_gated_mlp_against_numpy(activation):
    rng = _rng(11)
    X = rng.normal(size=(5, 3))
    Wg, Wu, Wd = rng.normal(size=(7, 5)), rng.normal(size=(7, 5)), rng.normal(size=(5, 7))
    bg, bu, bd = rng.normal(size=7), rng.normal(size=7), rng.normal(size=5)
    gate = Wg @ X + bg[:, None]
    if activation == "silu":  # SwiGLU
        sigma, f = gate / (1 + np.exp(-gate)), silu
    else:  # GeGLU with the paper's exact GELU
        sigma, f = ref.gelu(gate), fa.gelu
    expected = Wd @ (sigma * (Wu @ X + bu[:, None])) + bd[:, None]
    j = jnp.asarray
    got = gated_mlp(j(X), j(Wg), j(bg), j(Wu), j(bu), j(Wd), j(bd), f)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12)
    no_bias = gated_mlp(j(X), j(Wg), None, j(Wu), None, j(Wd), None, silu)
    G = Wg @ X
    np.testing.assert_allclose(np.asarray(no_bias), Wd @ (G / (1 + np.exp(-G)) * (Wu @ X)),
                               atol=1e-12)  # fmt: skip


# ----------------------------------------------------------------------------------- ALiBi


def test_alibi_slopes_are_press_et_al_geometric_sequence():
    np.testing.assert_allclose(np.asarray(alibi_slopes(8, jnp.float64)), [2.0**-k for k in
                               range(1, 9)])  # fmt: skip
    with pytest.raises(ValueError, match="argument 'H'"):
        alibi_slopes(6)


def test_alibi_attention_against_numpy_and_causal():
    rng = _rng(12)
    H, d, ell = 4, 6, 5
    W = _mha_params(rng, H, H, d, 3, d)
    X = rng.normal(size=(d, ell))
    Mask = np.triu(np.ones((ell, ell), bool))
    heads = []
    for h in range(H):
        m = 2.0 ** (-8 * (h + 1) / H)
        Q = np.asarray(W.W_q[h]) @ X + np.asarray(W.b_q[h])[:, None]
        K = np.asarray(W.W_k[h]) @ X + np.asarray(W.b_k[h])[:, None]
        V = np.asarray(W.W_v[h]) @ X + np.asarray(W.b_v[h])[:, None]
        S = np.empty((ell, ell))
        for tz in range(ell):
            for tx in range(ell):
                S[tz, tx] = K[:, tz] @ Q[:, tx] / math.sqrt(3) - m * (tx - tz)
        S = np.where(Mask, S, -np.inf)
        heads.append(V @ (np.exp(S - S.max(0)) / np.exp(S - S.max(0)).sum(0)))
    expected = np.asarray(W.W_o) @ np.concatenate(heads) + np.asarray(W.b_o)[:, None]
    got = alibi_mh_attention(jnp.asarray(X), jnp.asarray(X), W, Mask)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12)
    check_causal_jacobian(lambda X: alibi_mh_attention(X, X, W, Mask), jnp.asarray(X))


# ---------------------------------------------- factorised embeddings, cross-layer sharing


def test_factorised_embed_against_numpy():
    rng = _rng(13)
    W_e, W_p = rng.normal(size=(3, 10)), rng.normal(size=(3, 6))
    W_proj, b_proj = rng.normal(size=(8, 3)), rng.normal(size=8)
    x = np.array([4, 0, 9, 4])
    expected = W_proj @ (W_e[:, x] + W_p[:, :4]) + b_proj[:, None]
    j = jnp.asarray
    got = factorised_embed(j(x), j(W_e), j(W_p), j(W_proj), j(b_proj))
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-12)


def test_shared_layers_run_one_parameter_set_L_times_in_algorithm_9():
    theta = fa.init_e_transformer(jax.random.key(0), N_V=11, ell_max=8, L=1, H=2, d_e=8,
                                  d_mlp=12, dtype=jnp.float64)  # fmt: skip
    shared = theta._replace(layers=shared_layers(theta.layers[0], 3))
    x = jnp.asarray([3, 1, 4, 1, 5])
    np.testing.assert_allclose(np.asarray(fa.e_transformer(x, shared)),
                               ref.e_transformer(np.asarray(x), shared), atol=1e-10)  # fmt: skip
    # the gradient of the one set is the sum over its three uses
    grads = jax.jit(jax.grad(lambda t: fa.e_transformer_logits(x, t).sum()))(shared)
    g = jax.tree_util.tree_map(lambda *a: sum(a), *grads.layers)

    def loss_of_the_one_set(layer):
        return fa.e_transformer_logits(x, theta._replace(layers=shared_layers(layer, 3))).sum()

    g_shared = jax.jit(jax.grad(loss_of_the_one_set))(theta.layers[0])
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_shared), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)


# -------------------------------------------------- invariants of the Llama decoder (random)


def test_llama_is_causal_and_cached_equals_uncached():
    theta = init_llama(jax.random.key(1), N_V=23, L=2, H=4, G=2, d_e=16, d_mlp=24,
                       dtype=jnp.float64)  # fmt: skip
    x = jnp.asarray([5, 0, 22, 7, 7, 13])

    def full(x):
        return llama_logits(x, theta, rope_base=1e4)

    check_causal_tokens(full, x, 23, atol=1e-12)

    def stepwise(x):
        cache = init_llama_cache(theta, 8)
        cols = []
        for t in range(x.shape[0]):
            logits, cache = llama_cached_logits(x[t : t + 1], t, theta, cache, rope_base=1e4)
            cols.append(logits)
        return jnp.concatenate(cols, axis=1)

    check_incremental_matches_full(stepwise, full, x, atol=1e-12)
    # the decoding loop (one column at a time, vector form) is the literal Algorithm 14 on the
    # full forward: the argmax for τ = 0, the same draws fold_in(key, i) for τ > 0
    decoder = Decoder(theta, rope_base=1e4)
    key = jax.random.key(7)
    for tau in (0.0, 0.9):
        tokens = decoder.generate(x[:2], max_new=5, key=key, tau=tau)
        seq = list(np.asarray(x[:2]))
        for i, y in enumerate(tokens):
            p = full(jnp.asarray(seq))[:, -1]  # line 4: P[:, ℓ + i − 1] of the whole sequence
            assert y == int(fa.sample_token(jax.random.fold_in(key, i), p, tau))  # line 5
            seq.append(y)
    assert decoder.generate(x[:2], max_new=5, key=key, tau=0.9) != decoder.generate(
        x[:2], max_new=5, key=jax.random.key(8), tau=0.9
    )
