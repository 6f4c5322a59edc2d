"""The attention pictures show the model's weights: Algorithm 10 replayed from the primitives,
checked against an independent numpy transcription, against MHAttention (Algorithm 5) and
against DTransformer's own logits; plus the PNG writers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from formal_algorithms.paper.architectures import d_transformer_logits
from formal_algorithms.paper.attention import mh_attention, unidirectional_mask
from formal_algorithms.paper.parameters import init_d_transformer
from formal_algorithms.visualise import (
    d_attention_weights,
    plot_attention,
    plot_loss,
    token_label,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
L, H, d_e, N_V, ell_max = 2, 3, 12, 11, 8


@pytest.fixture(scope="module")
def theta():
    """A float64 θ with every leaf perturbed, so that biases, γ and β are all non-trivial."""
    theta = init_d_transformer(jax.random.key(0), N_V=N_V, ell_max=ell_max, L=L, H=H, d_e=d_e,
                               d_mlp=16, dtype=jnp.float64)  # fmt: skip
    leaves, tree = jax.tree_util.tree_flatten(theta)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [
        a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, noisy)


X_TOKENS = np.array([9, 3, 3, 0, 7, 2], np.int32)


def _np_layer_norm_columns(X, gamma, beta, eps=1e-5):
    out = np.empty_like(X)
    for t in range(X.shape[1]):
        e = X[:, t]
        m = sum(e) / len(e)
        v = sum((e_i - m) ** 2 for e_i in e) / len(e)
        out[:, t] = (e - m) / math.sqrt(v + eps) * gamma + beta
    return out


def test_first_layer_weights_equal_a_numpy_transcription(theta):
    A, X_tilde, _ = d_attention_weights(jnp.asarray(X_TOKENS), theta)
    layer = theta.layers[0]
    W_e, W_p = np.asarray(theta.W_e), np.asarray(theta.W_p)
    X = np.stack([W_e[:, v] + W_p[:, t] for t, v in enumerate(X_TOKENS)], axis=1)  # lines 1-3
    Xt = _np_layer_norm_columns(X, np.asarray(layer.gamma1), np.asarray(layer.beta1))  # line 5
    np.testing.assert_allclose(np.asarray(X_tilde[0]), Xt, rtol=0, atol=1e-12)
    ell = len(X_TOKENS)
    for h in range(H):
        Wq, bq = np.asarray(layer.W.W_q[h]), np.asarray(layer.W.b_q[h])
        Wk, bk = np.asarray(layer.W.W_k[h]), np.asarray(layer.W.b_k[h])
        expected = np.zeros((ell, ell))
        for t_x in range(ell):
            q = Wq @ Xt[:, t_x] + bq
            scores = [
                (Wk @ Xt[:, t_z] + bk) @ q / math.sqrt(len(q)) for t_z in range(t_x + 1)
            ]  # only t_z ≤ t_x may attend
            e = np.exp(np.asarray(scores) - max(scores))
            expected[: t_x + 1, t_x] = e / e.sum()
        np.testing.assert_allclose(np.asarray(A[0, h]), expected, rtol=0, atol=1e-12)


def test_weights_reproduce_mh_attention_and_the_model(theta):
    A, X_tilde, logits = d_attention_weights(jnp.asarray(X_TOKENS), theta)
    ell = len(X_TOKENS)
    assert A.shape == (L, H, ell, ell) and X_tilde.shape == (L, d_e, ell)
    Mask = unidirectional_mask(ell)
    for l, layer in enumerate(theta.layers):
        W, Xt = layer.W, np.asarray(X_tilde[l])
        # V^h A^h per head, stacked head-major, projected by W_o (Algorithm 5 lines 1-4).
        Y = np.concatenate(
            [(np.asarray(W.W_v[h]) @ Xt + np.asarray(W.b_v[h])[:, None]) @ np.asarray(A[l, h])
             for h in range(H)],
            axis=0,
        )  # fmt: skip
        expected = np.asarray(W.W_o) @ Y + np.asarray(W.b_o)[:, None]
        actual = mh_attention(X_tilde[l], X_tilde[l], W, Mask)
        np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=1e-12)
    # The replay (which continues the residual stream with these weights) is the model.
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(d_transformer_logits(jnp.asarray(X_TOKENS), theta)),
        rtol=0, atol=1e-11,
    )  # fmt: skip


def test_weights_are_causal_column_distributions(theta):
    A = np.asarray(d_attention_weights(jnp.asarray(X_TOKENS), theta)[0])
    ell = len(X_TOKENS)
    np.testing.assert_allclose(A.sum(axis=2), 1.0, rtol=0, atol=1e-12)  # each column t_x
    below = np.tril(np.ones((ell, ell), bool), k=-1)  # t_z > t_x: a later key
    assert np.all(A[:, :, below] == 0)
    assert np.all(A[:, :, ~below] > 0)
    assert np.all(A[:, :, 0, 0] == 1)  # the first query sees only itself


def test_attention_checks_its_tokens(theta):
    with pytest.raises(ValueError, match="outside"):
        d_attention_weights(jnp.asarray([1, N_V]), theta)
    with pytest.raises(ValueError, match="ell_max"):
        d_attention_weights(jnp.zeros(ell_max + 1, jnp.int32), theta)


def test_plots_write_pngs(tmp_path, theta):
    A = d_attention_weights(jnp.asarray(X_TOKENS), theta)[0]
    labels = [token_label(s) for s in ["<bos>", "a", " ", "\n", "\t", "日"]]
    assert labels[2:] == ["·", "\\n", "\\t", "U+65E5"]
    path = plot_attention(A, labels, tmp_path / "a.png", title="test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="labels"):
        plot_attention(A, labels[:-1], tmp_path / "b.png")
    history = 3.0 * np.exp(-np.arange(60) / 20) + 1.0
    path = plot_loss(history, tmp_path / "loss.png", held_out=1.3, unigram=3.1, title="t")
    assert path.read_bytes()[:8] == PNG_MAGIC
