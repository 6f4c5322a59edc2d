"""FAVOR+ (Performer) attention, formal_algorithms.variants.performer.

Expectations come from numpy float64 (the features' formula, Algorithm 4's softmax weights and
outputs via tests/paper_numpy.py), never from the code under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import paper_numpy as P
import pytest

from formal_algorithms import testing as T
from formal_algorithms.paper.architectures import d_transformer_logits
from formal_algorithms.paper.attention import AttentionParams, unidirectional_mask
from formal_algorithms.paper.parameters import init_d_transformer, init_e_transformer
from formal_algorithms.variants import performer as F
from formal_algorithms.variants.linear_attention import (
    causal_linear_attention,
    fast_weight_attention,
)


def head(key, d_x, d_attn, d_out, scale):
    keys = jax.random.split(key, 6)
    shapes = [(d_attn, d_x), (d_attn,), (d_attn, d_x), (d_attn,), (d_out, d_x), (d_out,)]
    return AttentionParams(*(scale * jax.random.normal(k, s, jnp.float64)
                             for k, s in zip(keys, shapes, strict=True)))  # fmt: skip


def np_features(X, Omega):
    """φ(x) = exp(Ω x̄ − ‖x̄‖²/2)/√m, x̄ = x/d^{1/4}, column by column."""
    X, Omega = np.asarray(X, np.float64), np.asarray(Omega, np.float64)
    d, m = X.shape[0], Omega.shape[0]
    out = np.empty((m, X.shape[1]))
    for t in range(X.shape[1]):
        x_bar = X[:, t] / d**0.25
        out[:, t] = np.exp(Omega @ x_bar - x_bar @ x_bar / 2) / math.sqrt(m)
    return out


def test_features_follow_the_formula_and_orthogonal_blocks():
    d, m = 4, 10  # blocks of 4, 4 and 2 rows
    Omega = F.draw_features(jax.random.key(0), m, d, dtype=jnp.float64)
    assert Omega.shape == (m, d)
    O = np.asarray(Omega)
    for block in (O[0:4], O[4:8], O[8:10]):  # rows orthogonal within a block
        G = block @ block.T
        np.testing.assert_allclose(G - np.diag(np.diag(G)), 0, atol=1e-12)
    assert not np.allclose(O[0:4] @ O[4:8].T, 0)  # but not across blocks
    assert np.ptp(np.linalg.norm(O, axis=1)) > 0.1  # lengths drawn (χ_d), not all equal
    X = jax.random.normal(jax.random.key(1), (d, 5), jnp.float64)
    np.testing.assert_allclose(F.favor_features(X, Omega), np_features(X, O), rtol=1e-12)
    # An explicit key: the same key gives the same Ω, a redraw a new one.
    again = F.redrawn_features(jax.random.key(0), 7, m, d, every=100, dtype=jnp.float64)
    redrawn = F.redrawn_features(jax.random.key(0), 100, m, d, every=100, dtype=jnp.float64)
    np.testing.assert_array_equal(
        again, F.draw_features(jax.random.fold_in(jax.random.key(0), 0), m, d, dtype=jnp.float64)
    )
    assert not np.allclose(again, redrawn)


@pytest.mark.parametrize("orthogonal", [True, False])
def test_estimator_mean_is_softmax_unnormalised_weight(orthogonal):
    """Over N independent Ω, the mean of φ(k)ᵀφ(q) is exp(kᵀq/√d_attn) within 5 standard errors
    for every pair; the same bound rejects a wrong kernel (exp(kᵀq/d_attn))."""
    d, N = 4, 4000
    kq = jax.random.normal(jax.random.key(2), (2, d, 3), jnp.float64) * 0.8
    K, Q = kq[0], kq[1]
    exact = np.exp(np.asarray(K).T @ np.asarray(Q) / math.sqrt(d))

    def estimate(key):
        Omega = F.draw_features(key, 8, d, orthogonal=orthogonal, dtype=jnp.float64)
        return F.favor_features(K, Omega).T @ F.favor_features(Q, Omega)

    E = np.asarray(jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(3), N)))
    assert (E > 0).all()  # positive features: no negative weight, ever
    mean, se = E.mean(axis=0), E.std(axis=0) / math.sqrt(N)
    assert np.all(np.abs(mean - exact) < 5 * se), np.abs(mean - exact) / se
    wrong = np.exp(np.asarray(K).T @ np.asarray(Q) / d)
    assert np.any(np.abs(mean - wrong) > 5 * se)


def test_error_falls_like_one_over_sqrt_m():
    """RMS relative error of the normalised output against softmax attention (numpy) over 96
    draws for m = 16 … 1024: log-log slope −0.5 ± 0.15 (measured: benchmarks/performer_error.py)."""
    d, ell = 8, 16
    W = head(jax.random.key(4), d, d, d, 0.15)
    X = jax.random.normal(jax.random.key(5), (d, ell), jnp.float64)
    exact = P.attention(np.asarray(X), np.asarray(X), *W, np.ones((ell, ell), bool))
    ms = np.array([16, 64, 256, 1024])
    for orthogonal in (False, True):
        errors = []
        for m in ms:

            def err(key, m=m, orthogonal=orthogonal):
                Omega = F.draw_features(key, int(m), d, orthogonal=orthogonal, dtype=jnp.float64)
                return jnp.sum((F.favor_attention(X, X, W, Omega) - exact) ** 2)

            keys = jax.random.split(jax.random.fold_in(jax.random.key(6), int(m)), 96)
            errors.append(math.sqrt(np.mean(jax.vmap(err)(keys)) / np.sum(exact**2)))
        slope = np.polyfit(np.log(ms), np.log(errors), 1)[0]
        assert -0.65 < slope < -0.35, (orthogonal, errors, slope)
        assert errors[-1] < 0.06


def test_parallel_prefix_sum_and_recurrent_forms_agree():
    d, ell, m = 6, 7, 20
    W = head(jax.random.key(7), d, 4, 5, 0.5)
    X = jax.random.normal(jax.random.key(8), (d, ell), jnp.float64)
    Omega = F.draw_features(jax.random.key(9), m, 4, dtype=jnp.float64)
    phi = np_features  # the expectation: weights from the numpy features, masked, normalised
    Q, K, V = (np.asarray(W[i]) @ np.asarray(X) + np.asarray(W[i + 1])[:, None] for i in (0, 2, 4))
    S = phi(K, Omega).T @ phi(Q, Omega)
    for causal in (True, False):
        S_m = np.where(P.causal(ell), S, 0) if causal else S
        expected = V @ (S_m / S_m.sum(axis=0))
        linear = F.favor_attention(X, X, W, Omega, causal=causal)
        Mask = unidirectional_mask(ell) if causal else None
        parallel = F.favor_attention_parallel(X, X, W, Omega, Mask)
        np.testing.assert_allclose(linear, expected, atol=1e-12, rtol=0)
        np.testing.assert_allclose(parallel, expected, atol=1e-12, rtol=0)
    # FAVOR+ as φ of the linear-attention module's forms (parallel and fast-weight recurrent).
    phi_favor = F.favor_feature_map(Omega)
    prefix = F.favor_attention(X, X, W, Omega, causal=True)
    np.testing.assert_allclose(causal_linear_attention(X, W, phi_favor), prefix, atol=1e-12)
    np.testing.assert_allclose(fast_weight_attention(X, W, phi_favor), prefix, atol=1e-12)
    # Padded context (valid): the real columns equal the unpadded ones.
    valid = jnp.arange(ell) < 5
    padded = F.favor_attention(X, X, W, Omega, valid=valid)
    short = F.favor_attention(X[:, :5], X[:, :5], W, Omega)
    np.testing.assert_allclose(padded[:, :5], short, atol=1e-12)


def test_causal_form_is_causal_and_the_bidirectional_is_not():
    d, ell = 4, 6
    W = head(jax.random.key(10), d, d, d, 0.5)
    Omega = F.draw_features(jax.random.key(11), 12, d, dtype=jnp.float64)
    X = jax.random.normal(jax.random.key(12), (d, ell), jnp.float64)
    T.check_causal_jacobian(lambda X: F.favor_attention(X, X, W, Omega, causal=True), X)
    with pytest.raises(T.InvariantViolation, match="depends on later input"):
        T.check_causal_jacobian(lambda X: F.favor_attention(X, X, W, Omega), X)
    # The Performer DTransformer (Algorithm 10 with causal FAVOR+ in every layer) is causal.
    hp = dict(N_V=11, ell_max=8, L=2, H=2, d_e=8, d_mlp=16, dtype=jnp.float64)
    theta = init_d_transformer(jax.random.key(13), **hp)
    Omega = F.draw_features(jax.random.key(14), 16, 4, dtype=jnp.float64)
    f = jax.jit(lambda x: F.performer_d_transformer_logits(x, theta, Omega))
    x = jnp.array([3, 1, 4, 1, 5, 9])
    T.check_causal_tokens(f, x, N_V=11)
    # With more features it approaches Algorithm 10 itself (relative error 0.55 at m = 16, 0.09
    # at m = 4096 for this θ: the estimate's variance grows through the layers).
    exact = np.asarray(d_transformer_logits(x, theta))
    errors = []
    for m in (16, 4096):
        Omega = F.draw_features(jax.random.key(15), m, 4, dtype=jnp.float64)
        approx = F.performer_d_transformer_logits(x, theta, Omega)
        errors.append(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    assert errors[1] < 0.15 and errors[0] > 3 * errors[1], errors


def test_performer_e_transformer_padding_and_errors():
    hp = dict(N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=16, dtype=jnp.float64)
    theta = init_e_transformer(jax.random.key(16), **hp)
    Omega = F.draw_features(jax.random.key(17), 16, 4, dtype=jnp.float64)
    x = jnp.array([2, 7, 1, 8, 2, 0, 0, 0])
    valid = jnp.arange(8) < 5
    padded = F.performer_e_transformer_logits(x, theta, Omega, valid=valid)
    short = F.performer_e_transformer_logits(x[:5], theta, Omega)
    np.testing.assert_allclose(padded[:, :5], short, atol=1e-12)
    with pytest.raises(ValueError, match=r"FAVOR\+ attention.*'Omega' has shape \(16, 3\)"):
        F.performer_e_transformer_logits(x, theta, Omega[:, :3])
    with pytest.raises(ValueError, match=r"FAVOR\+ attention.*'m'"):
        F.draw_features(jax.random.key(0), 0, 4)
    with pytest.raises(ValueError, match=r"FAVOR\+ attention.*'every'"):
        F.redrawn_features(jax.random.key(0), 3, 8, 4, every=0)
