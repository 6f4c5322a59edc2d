"""Deliberately broken variants, one per bug class seen in public transcriptions of the paper and
in widely used implementations (../shared/notes/bug-classes.md). Each must be rejected by a named
checker of formal_algorithms.testing with a readable message; the correct form must pass it."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa
from formal_algorithms import testing as T

rng = np.random.default_rng(7)
d, ell, H = 6, 5, 2
X = jnp.asarray(rng.normal(size=(d, ell)))
Z = jnp.asarray(rng.normal(size=(d, ell + 2)))


def perturbed(theta, scale=0.3, seed=0):
    r = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda w: w + scale * jnp.asarray(r.normal(size=w.shape), w.dtype), theta
    )


W = perturbed(fa.init_mh_attention(jax.random.key(0), H, d, d, 3, 4, d, dtype=jnp.float64))


def attention_with_mask(build_mask):
    """Algorithm 4's self-attention with a mask from ``build_mask(ℓ)`` and nothing else changed."""

    def f(X):
        return fa.mh_attention(X, X, W, build_mask(X.shape[1]))

    return f


# ------------------------------------------------------------------ causal mask off by one


def test_causal_mask_strict_triangle_is_caught():
    strict = attention_with_mask(lambda n: jnp.asarray(np.triu(np.ones((n, n), bool), k=1)))
    with pytest.raises(
        T.InvariantViolation, match="check_causal_jacobian: output column 0 ignores its own input"
    ):
        T.check_causal_jacobian(strict, X)
    T.check_causal_jacobian(attention_with_mask(fa.unidirectional_mask), X)


def test_causal_mask_transposed_is_caught():
    transposed = attention_with_mask(lambda n: fa.unidirectional_mask(n).T)
    with pytest.raises(
        T.InvariantViolation, match=r"output column 0 depends on later input column 1"
    ):
        T.check_causal_jacobian(transposed, X)


def test_causal_mask_transposed_is_caught_by_perturbation_on_a_decoder():
    theta = perturbed(
        fa.init_d_transformer(
            jax.random.key(1), N_V=9, ell_max=8, L=1, H=2, d_e=6, d_mlp=8, dtype=jnp.float64
        )
    )
    x = jnp.asarray([1, 2, 3, 4, 5])

    def leaky(x):  # Algorithm 10 with the mask transposed (lower-triangular in [t_z, t_x])
        X = fa.embed(x, theta.W_e, theta.W_p)
        for layer in theta.layers:
            X = fa.pre_ln_layer(X, layer, fa.unidirectional_mask(x.shape[0]).T, fa.gelu)
        return fa.softmax(theta.W_u @ fa.layer_norm_columns(X, theta.gamma, theta.beta))

    with pytest.raises(
        T.InvariantViolation, match=r"check_causal_tokens: changing x\[1:\] changed output column 0"
    ):
        T.check_causal_tokens(leaky, x, 9)
    T.check_causal_tokens(lambda x: fa.d_transformer(x, theta), x, 9)


# ------------------------------------------------------------------- softmax over wrong axis


def test_softmax_over_the_wrong_axis_is_caught():
    theta = perturbed(
        fa.init_d_transformer(
            jax.random.key(2), N_V=9, ell_max=8, L=1, H=2, d_e=6, d_mlp=8, dtype=jnp.float64
        )
    )
    x = jnp.asarray([1, 2, 3])
    logits = fa.d_transformer_logits(x, theta)
    with pytest.raises(
        T.InvariantViolation, match="check_column_stochastic: column .* sums to .*wrong axis"
    ):
        T.check_column_stochastic(jax.nn.softmax(logits, axis=1))  # normalises rows
    T.check_column_stochastic(fa.softmax(logits))


# ------------------------------------------------------------------------- layer norm bugs


def test_layer_norm_over_the_wrong_axis_is_caught():
    def rows(X, gamma, beta):  # normalises each row (over positions) instead of each column
        m = X.mean(axis=1, keepdims=True)
        v = ((X - m) ** 2).mean(axis=1, keepdims=True)
        return (X - m) / jnp.sqrt(v + 1e-5) * gamma[:, None] + beta[:, None]

    with pytest.raises(
        T.InvariantViolation, match="check_layer_norm_columns: column 0: .*wrong axis"
    ):
        T.check_layer_norm_columns(rows, X)
    T.check_layer_norm_columns(fa.layer_norm_columns, X)


def test_layer_norm_with_unbiased_variance_is_caught():
    def unbiased(e, gamma, beta, eps=1e-5):
        m = e.mean()
        v = ((e - m) ** 2).sum() / (e.shape[0] - 1)  # ÷ (d_e − 1): not line 2
        return (e - m) / jnp.sqrt(v + eps) * gamma + beta

    with pytest.raises(
        T.InvariantViolation, match=r"check_layer_norm: .*biased variance.*\(unbiased variance\?\)"
    ):
        T.check_layer_norm(unbiased, X[:, 0])
    T.check_layer_norm(fa.layer_norm, X[:, 0])


def test_layer_norm_with_eps_outside_the_root_is_caught():
    def eps_outside(e, gamma, beta):
        m = e.mean()
        return (e - m) / (jnp.sqrt(((e - m) ** 2).mean()) + 1e-2) * gamma + beta

    with pytest.raises(T.InvariantViolation, match="check_layer_norm: output's biased variance"):
        T.check_layer_norm(eps_outside, X[:, 0])


# ------------------------------------------------------------- attention ignoring its weights


def test_attention_that_sums_the_values_is_caught():
    def sums_values(X, Z, W, Mask=None):  # the einsum that forgets α: Σ_t v_t for every query
        V = W.W_v @ Z + W.b_v[:, None]
        return jnp.repeat(V.sum(axis=1, keepdims=True), X.shape[1], axis=1)

    Mask = jnp.asarray(rng.random((ell + 2, ell)) < 0.6).at[0].set(True)
    with pytest.raises(
        T.InvariantViolation,
        match="check_attention_reductions: head 0, column 0: Algorithm 4 differs from Algorithm 3",
    ):
        T.check_attention_reductions(sums_values, W=W, X=X, Z=Z, Mask=Mask)
    with pytest.raises(T.InvariantViolation, match="check_mask_respect: masked context token"):
        T.check_mask_respect(lambda X, Z, M: sums_values(X, Z, W.head(0), M), X, Z, Mask)
    T.check_attention_reductions(W=W, X=X, Z=Z, Mask=Mask)
    T.check_mask_respect(lambda X, Z, M: fa.attention(X, Z, W.head(0), M), X, Z, Mask)


# ------------------------------------------------ a decoder sharing one attention for both


def test_decoder_sharing_self_and_cross_attention_is_caught():
    theta = perturbed(
        fa.init_ed_transformer(
            jax.random.key(3),
            N_V=9,
            ell_max=8,
            L_enc=1,
            L_dec=1,
            H=2,
            d_e=6,
            d_mlp=8,
            dtype=jnp.float64,
        )
    )
    z, x = jnp.asarray([1, 2, 3, 4]), jnp.asarray([5, 6, 7])

    def shared(theta):  # lines 14 and 16 both with W_dec
        Z = fa.ed_encode(z, theta)
        X = fa.embed(x, theta.W_e, theta.W_p)
        for l in theta.dec:
            X = fa.layer_norm_columns(
                X + fa.mh_attention(X, X, l.W_dec, fa.unidirectional_mask(3)), l.gamma3, l.beta3
            )
            X = fa.layer_norm_columns(X + fa.mh_attention(X, Z, l.W_dec), l.gamma4, l.beta4)
            X = fa.layer_norm_columns(
                X + fa.mlp(X, l.W_mlp3, l.b_mlp3, l.W_mlp4, l.b_mlp4, fa.relu), l.gamma5, l.beta5
            )
        return fa.softmax(theta.W_u @ X)

    with pytest.raises(T.InvariantViolation, match=r"theta\.dec\[0\]\.W_ed\.W_q has zero gradient"):
        T.check_every_parameter_matters(shared, theta)
    T.check_every_parameter_matters(lambda th: jnp.log(fa.ed_transformer(z, x, th)), theta)


# ------------------------------------------------- Pre-LN normalising the residual in place


def test_pre_ln_that_normalises_the_residual_stream_is_caught():
    layer = perturbed(
        fa.init_d_transformer(
            jax.random.key(4), N_V=9, ell_max=8, L=1, H=2, d_e=d, d_mlp=8, dtype=jnp.float64
        )
    ).layers[0]
    silent = layer._replace(
        W=layer.W._replace(W_o=jnp.zeros_like(layer.W.W_o), b_o=jnp.zeros_like(layer.W.b_o)),
        W_mlp2=jnp.zeros_like(layer.W_mlp2), b_mlp2=jnp.zeros_like(layer.b_mlp2),
    )  # fmt: skip
    Mask = fa.unidirectional_mask(ell)

    def in_place(X):
        X = fa.layer_norm_columns(X, silent.gamma1, silent.beta1)  # X itself, not X̃
        X = X + fa.mh_attention(X, X, silent.W, Mask)
        X = fa.layer_norm_columns(X, silent.gamma2, silent.beta2)
        return X + fa.mlp(X, silent.W_mlp1, silent.b_mlp1, silent.W_mlp2, silent.b_mlp2, fa.gelu)

    with pytest.raises(
        T.InvariantViolation, match="check_residual_identity: .*normalised in place"
    ):
        T.check_residual_identity(in_place, X)
    T.check_residual_identity(lambda X: fa.pre_ln_layer(X, silent, Mask, fa.gelu), X)


# ------------------------------------------------------- training targets shifted wrongly


def test_targets_shifted_twice_or_not_at_all_are_caught():
    theta = perturbed(
        fa.init_d_transformer(
            jax.random.key(5), N_V=9, ell_max=8, L=1, H=2, d_e=6, d_mlp=8, dtype=jnp.float64
        )
    )
    x = jnp.asarray([1, 4, 2, 6, 3])

    def log_P(theta, x):
        return jax.nn.log_softmax(fa.d_transformer_logits(x, theta), axis=0)

    def not_shifted(theta, x):
        return -sum(log_P(theta, x)[x[t], t] for t in range(len(x)))

    def shifted_twice(theta, x):
        return -sum(log_P(theta, x)[x[t + 2], t] for t in range(len(x) - 2))

    def right(theta, x):  # Algorithm 13, line 5
        return -sum(log_P(theta, x)[x[t + 1], t] for t in range(len(x) - 1))

    with pytest.raises(T.InvariantViolation, match=r"targets not shifted"):
        T.check_next_token_loss(not_shifted, fa.d_transformer_logits, theta, x)
    with pytest.raises(T.InvariantViolation, match=r"targets shifted twice"):
        T.check_next_token_loss(shifted_twice, fa.d_transformer_logits, theta, x)
    T.check_next_token_loss(right, fa.d_transformer_logits, theta, x)


# ------------------------------------------------------------- a cache off by one position


def test_cache_with_positions_off_by_one_is_caught():
    theta = perturbed(
        fa.init_d_transformer(
            jax.random.key(6), N_V=9, ell_max=8, L=1, H=2, d_e=6, d_mlp=8, dtype=jnp.float64
        )
    )
    x = jnp.asarray([1, 4, 2, 6])
    shifted = theta._replace(W_p=jnp.roll(theta.W_p, -1, axis=1))  # token t gets position t + 1

    def off_by_one(x):  # each new token embedded at the wrong position, earlier ones kept
        columns = [
            fa.d_transformer_logits(x[: t + 1], theta if t == 0 else shifted)[:, t]
            for t in range(len(x))
        ]
        return jnp.stack(columns, axis=1)

    def one_at_a_time(x):  # the right incremental computation, without a cache
        return jnp.stack(
            [fa.d_transformer_logits(x[: t + 1], theta)[:, t] for t in range(len(x))], axis=1
        )

    full = lambda x: fa.d_transformer_logits(x, theta)  # noqa: E731
    with pytest.raises(
        T.InvariantViolation, match="check_incremental_matches_full: position 1: .*off by one"
    ):
        T.check_incremental_matches_full(off_by_one, full, x)
    T.check_incremental_matches_full(one_at_a_time, full, x)


def test_messages_are_readable_sentences():
    with pytest.raises(AssertionError) as info:  # InvariantViolation is an AssertionError
        T.check_column_stochastic(jnp.asarray([[0.5, 0.5], [0.4, 0.4]]))
    message = str(info.value)
    assert message.startswith("check_column_stochastic: column") and "\n" not in message
    assert not math.isnan(float(message.split("sums to ")[1].split(",")[0]))
