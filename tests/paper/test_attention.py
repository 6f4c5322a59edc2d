"""Eq. 3 masks and Algorithms 3, 4, 5: numpy loops over the paper's indices, and the algorithms
as oracles for each other (Alg 3 per column = Alg 4; Alg 4 per head, stacked, projected = Alg 5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa

rng = np.random.default_rng(2)
# All dimensions distinct, so that a transposed weight or a swapped axis cannot type-check.
d_x, d_z, d_attn, d_mid, d_out, H, ell_x, ell_z = 5, 7, 3, 4, 6, 3, 4, 6


def random_head(d_x, d_z, d_attn, d_v):
    return fa.AttentionParams(
        *(
            jnp.asarray(rng.normal(size=s))
            for s in [(d_attn, d_x), (d_attn,), (d_attn, d_z), (d_attn,), (d_v, d_z), (d_v,)]
        )
    )


def random_mh():
    heads = [random_head(d_x, d_z, d_attn, d_mid) for _ in range(H)]
    stacked = [jnp.stack(ws) for ws in zip(*heads, strict=True)]
    W_o, b_o = rng.normal(size=(d_out, H * d_mid)), rng.normal(size=d_out)
    return fa.MHAttentionParams(*stacked, jnp.asarray(W_o), jnp.asarray(b_o))


def numpy_attention(X, Z, W, Mask):
    """Algorithm 4 with explicit loops over t_z, t_x; masked entries dropped from the sum."""
    W = [np.asarray(w) for w in W]
    W_q, b_q, W_k, b_k, W_v, b_v = W
    Q = W_q @ X + b_q[:, None]  # line 1
    K = W_k @ Z + b_k[:, None]  # line 2
    V = W_v @ Z + b_v[:, None]  # line 3
    out = np.zeros((V.shape[0], X.shape[1]))
    for t_x in range(X.shape[1]):
        allowed = [t_z for t_z in range(Z.shape[1]) if Mask[t_z, t_x]]
        scores = {t_z: sum(K[i, t_z] * Q[i, t_x] for i in range(Q.shape[0])) for t_z in allowed}
        Zsum = sum(math.exp(s / math.sqrt(Q.shape[0])) for s in scores.values())
        for t_z, s in scores.items():
            out[:, t_x] += math.exp(s / math.sqrt(Q.shape[0])) / Zsum * V[:, t_z]
    return out


def test_masks_eq_3():
    M = np.asarray(fa.unidirectional_mask(4))
    for t_z in range(4):
        for t_x in range(4):
            assert M[t_z, t_x] == (t_z <= t_x)
    np.testing.assert_array_equal(M, np.triu(np.ones((4, 4), bool)))  # upper, diagonal included
    assert np.asarray(fa.bidirectional_mask(2, 3)).all() and fa.bidirectional_mask(2, 3).shape == (
        2,
        3,
    )
    # From positions: one query at position 5 sees keys 0..5 of a cache of 8 (bug class 3).
    m = np.asarray(fa.causal_mask(jnp.arange(8), jnp.asarray([5])))
    np.testing.assert_array_equal(m[:, 0], np.arange(8) <= 5)


def test_single_query_attention_lines():  # Algorithm 3
    W = random_head(d_x, d_x, d_attn, d_out)
    e, E = rng.normal(size=d_x), rng.normal(size=(d_x, ell_z))
    Wn = [np.asarray(w) for w in W]
    q = Wn[0] @ e + Wn[1]  # line 1
    k = [Wn[2] @ E[:, t] + Wn[3] for t in range(ell_z)]  # line 2
    v = [Wn[4] @ E[:, t] + Wn[5] for t in range(ell_z)]  # line 3
    a = [math.exp(q @ k[t] / math.sqrt(d_attn)) for t in range(ell_z)]
    alpha = [a_t / sum(a) for a_t in a]  # line 4
    expected = sum(alpha[t] * v[t] for t in range(ell_z))  # line 5
    out = fa.single_query_attention(jnp.asarray(e), jnp.asarray(E), W)
    assert out.shape == (d_out,)
    np.testing.assert_allclose(out, expected, atol=1e-13)


def test_single_query_attention_closed_form():
    """W_q = W_k = I (d_attn = 1): key scores 0 and √1·1 → α = (1, e)/(1 + e); values 0 and 1."""
    one = jnp.ones((1, 1))
    W = fa.AttentionParams(one, jnp.zeros(1), one, jnp.zeros(1), one, jnp.zeros(1))
    out = fa.single_query_attention(jnp.asarray([1.0]), jnp.asarray([[0.0, 1.0]]), W)
    np.testing.assert_allclose(out, [math.e / (1 + math.e)], atol=1e-15)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_lines(masked):  # Algorithm 4
    W = random_head(d_x, d_z, d_attn, d_out)
    X, Z = rng.normal(size=(d_x, ell_x)), rng.normal(size=(d_z, ell_z))
    Mask = rng.random((ell_z, ell_x)) < 0.6 if masked else np.ones((ell_z, ell_x), bool)
    Mask[0] = True  # every column keeps some context
    out = fa.attention(jnp.asarray(X), jnp.asarray(Z), W, jnp.asarray(Mask))
    assert out.shape == (d_out, ell_x)
    np.testing.assert_allclose(out, numpy_attention(X, Z, W, Mask), atol=1e-12)


def test_attention_is_single_query_attention_per_column():  # Alg 3 ↔ Alg 4
    W = random_head(d_x, d_x, d_attn, d_out)
    X = rng.normal(size=(d_x, ell_x))
    Mask = np.asarray(fa.unidirectional_mask(ell_x))
    out = fa.attention(jnp.asarray(X), jnp.asarray(X), W, jnp.asarray(Mask))
    for t in range(ell_x):
        context = X[:, Mask[:, t]]  # only the allowed context tokens
        np.testing.assert_allclose(
            out[:, t],
            fa.single_query_attention(jnp.asarray(X[:, t]), jnp.asarray(context), W),
            atol=1e-13,
        )


def test_mh_attention_is_attention_per_head_stacked_and_projected():  # Alg 4 ↔ Alg 5
    W = random_mh()
    X, Z = jnp.asarray(rng.normal(size=(d_x, ell_x))), jnp.asarray(rng.normal(size=(d_z, ell_z)))
    Mask = jnp.asarray(rng.random((ell_z, ell_x)) < 0.7).at[0].set(True)
    Y = np.concatenate([np.asarray(fa.attention(X, Z, W.head(h), Mask)) for h in range(H)], axis=0)
    expected = np.asarray(W.W_o) @ Y + np.asarray(W.b_o)[:, None]  # lines 3-4
    out = fa.mh_attention(X, Z, W, Mask)
    assert out.shape == (d_out, ell_x)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_mh_attention_single_head_identity_projection_is_attention():  # Alg 5 (H=1) = Alg 4
    head = random_head(d_x, d_z, d_attn, d_mid)
    W = fa.MHAttentionParams(*(w[None] for w in head), jnp.eye(d_mid), jnp.zeros(d_mid))
    X, Z = jnp.asarray(rng.normal(size=(d_x, ell_x))), jnp.asarray(rng.normal(size=(d_z, ell_z)))
    np.testing.assert_allclose(fa.mh_attention(X, Z, W), fa.attention(X, Z, head), atol=1e-13)


def test_masked_context_has_no_influence():
    W = random_mh()
    X, Z = jnp.asarray(rng.normal(size=(d_x, ell_x))), jnp.asarray(rng.normal(size=(d_z, ell_z)))
    Mask = (
        jnp.ones((ell_z, ell_x), bool).at[2:4].set(False)
    )  # context tokens 2, 3 masked everywhere
    Z2 = Z.at[:, 2:4].set(1e3 * jnp.asarray(rng.normal(size=(d_z, 2))))
    np.testing.assert_allclose(
        fa.mh_attention(X, Z, W, Mask), fa.mh_attention(X, Z2, W, Mask), atol=1e-12
    )
    g = jax.grad(lambda Z: jnp.sum(fa.mh_attention(X, Z, W, Mask) ** 2))(Z)
    np.testing.assert_array_equal(g[:, 2:4], 0.0)
    assert np.abs(np.asarray(g[:, :2])).sum() > 0


def test_fully_masked_column_is_zero_with_finite_gradients():  # bug class 1
    W = random_head(d_x, d_z, d_attn, d_out)
    X, Z = jnp.asarray(rng.normal(size=(d_x, ell_x))), jnp.asarray(rng.normal(size=(d_z, ell_z)))
    Mask = jnp.ones((ell_z, ell_x), bool).at[:, 1].set(False)
    out = fa.attention(X, Z, W, Mask)
    np.testing.assert_array_equal(out[:, 1], 0.0)  # documented: Σ over an empty context
    grads = jax.grad(lambda W, X, Z: jnp.sum(fa.attention(X, Z, W, Mask) ** 2), argnums=(0, 1, 2))(
        W, X, Z
    )
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    np.testing.assert_array_equal(grads[1][:, 1], 0.0)  # the masked query gets no gradient


def test_causal_self_attention_jacobian_is_upper_triangular():
    W = fa.MHAttentionParams(
        *random_mh()[:6],
        *(jnp.asarray(a) for a in (rng.normal(size=(d_x, H * d_mid)), rng.normal(size=d_x))),
    )
    W = W._replace(
        W_k=jnp.asarray(rng.normal(size=(H, d_attn, d_x))),
        W_v=jnp.asarray(rng.normal(size=(H, d_mid, d_x))),
    )
    X = jnp.asarray(rng.normal(size=(d_x, ell_x)))
    Mask = fa.unidirectional_mask(ell_x)
    J = jax.jacobian(lambda X: fa.mh_attention(X, X, W, Mask))(X)  # (d, ℓ, d, ℓ)
    influence = np.abs(np.asarray(J)).sum(axis=(0, 2))  # [t_out, t_in]
    for t_out in range(ell_x):
        for t_in in range(ell_x):
            assert (influence[t_out, t_in] == 0) == (t_in > t_out)


def test_attention_jit_vmap_grad_and_int_mask():
    W = random_mh()
    Xs = jnp.asarray(rng.normal(size=(2, d_x, ell_x)))
    Z = jnp.asarray(rng.normal(size=(d_z, ell_z)))
    batched = jax.vmap(fa.mh_attention, (0, None, None, None))(Xs, Z, W, None)
    for b in range(2):
        np.testing.assert_allclose(batched[b], fa.mh_attention(Xs[b], Z, W), atol=1e-13)
    np.testing.assert_allclose(
        jax.jit(fa.mh_attention)(Xs[0], Z, W), fa.mh_attention(Xs[0], Z, W), atol=1e-13
    )
    Mask01 = jnp.asarray(rng.random((ell_z, ell_x)) < 0.5, jnp.int32).at[0].set(1)
    np.testing.assert_allclose(
        fa.mh_attention(Xs[0], Z, W, Mask01),
        fa.mh_attention(Xs[0], Z, W, Mask01.astype(bool)),
        atol=0,
    )
    g = jax.grad(lambda W: jnp.sum(fa.mh_attention(Xs[0], Z, W)))(W)
    assert all(np.isfinite(a).all() for a in g)


def test_attention_shape_errors_name_algorithm_and_argument():
    W = random_mh()
    X, Z = jnp.ones((d_x, ell_x)), jnp.ones((d_z, ell_z))
    with pytest.raises(ValueError, match=r"mh_attention \(Algorithm 5\): argument 'Z' has shape"):
        fa.mh_attention(X, jnp.ones((d_z + 1, ell_z)), W)
    with pytest.raises(ValueError, match=r"Algorithm 5\): argument 'Mask' has shape \(4, 6\)"):
        fa.mh_attention(X, Z, W, jnp.ones((ell_x, ell_z), bool))  # transposed mask
    with pytest.raises(TypeError, match=r"argument 'Mask' must be boolean"):
        fa.mh_attention(X, Z, W, jnp.full((ell_z, ell_x), 0.5))
    with pytest.raises(ValueError, match=r"attention \(Algorithm 4\): argument 'X'"):
        fa.attention(jnp.ones((d_x + 2, ell_x)), Z, W.head(0))


def test_init_shapes_follow_eq_4():
    W = fa.init_mh_attention(jax.random.key(0), H, d_x, d_z, d_attn, d_mid, d_out)
    assert [w.shape for w in W] == [
        (H, d_attn, d_x),
        (H, d_attn),
        (H, d_attn, d_z),
        (H, d_attn),
        (H, d_mid, d_z),
        (H, d_mid),
        (d_out, H * d_mid),
        (d_out,),
    ]
    assert all(w.dtype == jnp.result_type(float) for w in W)  # JAX's default float (x64 here)
    W32 = fa.init_mh_attention(jax.random.key(0), H, d_x, d_z, d_attn, d_mid, d_out, jnp.float32)
    assert all(w.dtype == jnp.float32 for w in W32)
