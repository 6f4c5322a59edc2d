"""An independent float64 numpy transcription of the paper's Algorithms 4-10, for use as the
expectation in equation tests. It shares no code with the package: loops over the paper's
indices where that is cheap, plain matrix products elsewhere. Parameters are read from the
package's NamedTuples by field name only.
"""

import math

import numpy as np


def n(a):
    return np.asarray(a, dtype=np.float64)


def softmax_columns(A):
    out = np.empty_like(A)
    for j in range(A.shape[1]):
        col = np.exp(A[:, j] - A[:, j].max())
        out[:, j] = col / col.sum()
    return out


def layer_norm(e, gamma, beta, eps):
    m = e.sum() / len(e)
    v = ((e - m) ** 2).sum() / len(e)
    return (e - m) / math.sqrt(v + eps) * n(gamma) + n(beta)


def layer_norm_columns(X, gamma, beta, eps):
    return np.stack([layer_norm(X[:, t], gamma, beta, eps) for t in range(X.shape[1])], axis=1)


def attention(X, Z, W_q, b_q, W_k, b_k, W_v, b_v, Mask):
    Q = n(W_q) @ X + n(b_q)[:, None]
    K = n(W_k) @ Z + n(b_k)[:, None]
    V = n(W_v) @ Z + n(b_v)[:, None]
    S = K.T @ Q
    out = np.zeros((V.shape[0], X.shape[1]))
    for t_x in range(X.shape[1]):
        allowed = [t_z for t_z in range(Z.shape[1]) if Mask[t_z, t_x]]
        s = np.array([S[t_z, t_x] for t_z in allowed]) / math.sqrt(Q.shape[0])
        w = np.exp(s - s.max())
        w /= w.sum()
        for a, t_z in zip(w, allowed, strict=True):
            out[:, t_x] += a * V[:, t_z]
    return out


def mh_attention(X, Z, W, Mask):
    H = W.W_q.shape[0]
    Y = np.concatenate(
        [attention(X, Z, *(w[h] for w in W[:6]), Mask) for h in range(H)], axis=0
    )  # [Y^1; …; Y^H]
    return n(W.W_o) @ Y + n(W.b_o)[:, None]


def relu(x):
    return np.maximum(x, 0)


def gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def embed(x, W_e, W_p):
    return np.stack([n(W_e)[:, x[t]] + n(W_p)[:, t] for t in range(len(x))], axis=1)


def W_u(theta):
    return n(theta.W_e).T if theta.W_u is None else n(theta.W_u)


def causal(ell):
    return np.array([[t_z <= t_x for t_x in range(ell)] for t_z in range(ell)])


def ed_transformer(z, x, theta, eps=1e-5):
    """Algorithm 8, lines 1-21."""
    Z = embed(z, theta.W_e, theta.W_p)
    for l in theta.enc:
        Z = Z + mh_attention(Z, Z, l.W, np.ones((len(z), len(z)), bool))
        Z = layer_norm_columns(Z, l.gamma1, l.beta1, eps)
        Z = Z + n(l.W_mlp2) @ relu(n(l.W_mlp1) @ Z + n(l.b_mlp1)[:, None]) + n(l.b_mlp2)[:, None]
        Z = layer_norm_columns(Z, l.gamma2, l.beta2, eps)
    X = embed(x, theta.W_e, theta.W_p)
    for l in theta.dec:
        X = X + mh_attention(X, X, l.W_dec, causal(len(x)))
        X = layer_norm_columns(X, l.gamma3, l.beta3, eps)
        X = X + mh_attention(X, Z, l.W_ed, np.ones((len(z), len(x)), bool))
        X = layer_norm_columns(X, l.gamma4, l.beta4, eps)
        X = X + n(l.W_mlp4) @ relu(n(l.W_mlp3) @ X + n(l.b_mlp3)[:, None]) + n(l.b_mlp4)[:, None]
        X = layer_norm_columns(X, l.gamma5, l.beta5, eps)
    return softmax_columns(W_u(theta) @ X)


def e_transformer(x, theta, eps=1e-5):
    """Algorithm 9, lines 1-12 (W_u is N_V × d_f: the erratum fixed)."""
    X = embed(x, theta.W_e, theta.W_p)
    for l in theta.layers:
        X = X + mh_attention(X, X, l.W, np.ones((len(x), len(x)), bool))
        X = layer_norm_columns(X, l.gamma1, l.beta1, eps)
        X = X + n(l.W_mlp2) @ gelu(n(l.W_mlp1) @ X + n(l.b_mlp1)[:, None]) + n(l.b_mlp2)[:, None]
        X = layer_norm_columns(X, l.gamma2, l.beta2, eps)
    X = gelu(n(theta.W_f) @ X + n(theta.b_f)[:, None])
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)
    return softmax_columns(W_u(theta) @ X)


def d_transformer(x, theta, eps=1e-5):
    """Algorithm 10, lines 1-11 (Pre-LN: only the branch input X̃ is normalised)."""
    X = embed(x, theta.W_e, theta.W_p)
    for l in theta.layers:
        Xt = layer_norm_columns(X, l.gamma1, l.beta1, eps)
        X = X + mh_attention(Xt, Xt, l.W, causal(len(x)))
        Xt = layer_norm_columns(X, l.gamma2, l.beta2, eps)
        X = X + n(l.W_mlp2) @ gelu(n(l.W_mlp1) @ Xt + n(l.b_mlp1)[:, None]) + n(l.b_mlp2)[:, None]
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)
    return softmax_columns(W_u(theta) @ X)
