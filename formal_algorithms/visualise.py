"""Pictures of a trained transformer: the attention weights of Algorithm 10 and the loss curve.

:func:`d_attention_weights` replays Algorithm 10 from the primitives and keeps, for every layer l
and head h, the attention matrix of line 6, i.e. Algorithm 4's line 6 inside Algorithm 5:
``A^{l,h} = softmax(K^{hᵀ} Q^h / √d_attn)`` with ``Mask[t_z, t_x] = [[t_z ≤ t_x]]``, in the paper's
orientation: rows are the context (key) positions t_z, columns the primary (query) positions
t_x, every column a distribution over t_z ≤ t_x (upper-triangular). The replay continues the
residual stream with these very weights (``W_o [V^1 A^1; …; V^H A^H] + b_o 1ᵀ``), and the tests
check it against :func:`~formal_algorithms.attention.mh_attention` and
:func:`~formal_algorithms.architectures.d_transformer_logits`, so the pictures show the model's
weights and not a re-implementation's.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .paper.architectures import mlp, unembedding_matrix
from .paper.attention import MHAttentionParams, unidirectional_mask
from .paper.embeddings import embed
from .paper.functions import gelu, softmax
from .paper.normalisation import EPS, layer_norm_columns
from .paper.parameters import DTransformerParams
from .paper.validation import check_params

ALG10 = "DTransformer (Algorithm 10)"


def attention_weights(X_tilde, Z, W: MHAttentionParams, Mask=None):
    """The attention matrices of Algorithm 5's H heads, shape ``(H, ℓ_z, ℓ_x)``.

    Per head h, Algorithm 4 lines 1-2 and 4-6 without the values:
    ``Q = W_q^h X̃ + b_q^h 1ᵀ``, ``K = W_k^h Z + b_k^h 1ᵀ``, ``S = KᵀQ``,
    ``A = softmax(S / √d_attn)`` over each column with ``S[t_z, t_x] = −∞`` where ``Mask`` is False.
    """

    def head(W_q, b_q, W_k, b_k):
        Q = W_q @ X_tilde + b_q[:, None]  # Alg 4 line 1
        K = W_k @ Z + b_k[:, None]  # Alg 4 line 2
        S = K.T @ Q  # Alg 4 line 4: (ℓ_z, ℓ_x)
        S = S if Mask is None else jnp.where(jnp.asarray(Mask, bool), S, -jnp.inf)  # Alg 4 line 5
        return softmax(S / math.sqrt(Q.shape[0]))  # Alg 4 line 6 (part: A)

    return jax.vmap(head)(W.W_q, W.b_q, W.W_k, W.b_k)


def attend(A, Z, W: MHAttentionParams):
    """Algorithm 5 lines 1-4 from given weights: ``W_o [V^1 A^1; …; V^H A^H] + b_o 1ᵀ``,
    ``V^h = W_v^h Z + b_v^h 1ᵀ`` (Algorithm 4 line 3), ``A`` of shape ``(H, ℓ_z, ℓ_x)``."""
    V = jnp.einsum("hmd,dt->hmt", W.W_v, Z) + W.b_v[:, :, None]  # (H, d_mid, ℓ_z)
    Y = jnp.einsum("hmt,htx->hmx", V, A)  # Alg 4 line 6, per head
    H, d_mid, ell_x = Y.shape
    return W.W_o @ Y.reshape(H * d_mid, ell_x) + W.b_o[:, None]  # Alg 5 lines 3-4


def d_attention_weights(x, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 10 replayed for the prompt ``x``, keeping every layer's attention weights.

    Returns ``(A, X_tilde, logits)``: ``A`` ``(L, H, ℓ, ℓ)`` indexed ``[l, h, t_z, t_x]``;
    ``X_tilde`` ``(L, d_e, ℓ)``, line 5's normalised input of each layer's attention; ``logits``
    ``W_u X`` ``(N_V, ℓ)`` of line 11 (before the softmax), computed with these weights.
    """
    check_params(theta, ALG10, DTransformerParams)
    if not isinstance(theta, DTransformerParams):
        raise TypeError(f"{ALG10}: argument 'theta' must be DTransformerParams, got {type(theta)}")
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3 (embed checks the tokens)
    Mask = unidirectional_mask(X.shape[1])  # Mask[t, t'] = [[t ≤ t']]
    As, X_tildes = [], []
    for layer in theta.layers:  # line 4
        X_tilde = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 5
        A = attention_weights(X_tilde, X_tilde, layer.W, Mask)
        X = X + attend(A, X_tilde, layer.W)  # line 6, with the weights we keep
        X_tilde2 = layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 7
        X = X + mlp(X_tilde2, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation)
        As.append(A)
        X_tildes.append(X_tilde)
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    return jnp.stack(As), jnp.stack(X_tildes), unembedding_matrix(theta) @ X  # line 11


# ------------------------------------------------------------------------------------- plots


def token_label(text: str) -> str:
    """A short printable label for a token's text (whitespace made visible, no exotic glyphs)."""
    label = text.replace(" ", "·").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return "".join(c if ord(c) < 0x250 and c.isprintable() else f"U+{ord(c):04X}" for c in label)


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def tick_step(ell: int, max_labels: int = 16) -> int:
    """Label every n-th position of an axis of ``ell`` positions: the smallest n of 1, 2, 4, 5,
    8, 10, 16, 20, 25, 32, … that leaves at most ``max_labels`` labels (ℓ = 64: every 4th)."""
    n, k = 1, 0
    while math.ceil(ell / n) > max_labels:
        k += 1
        n = (1, 2, 4, 5, 8)[k % 5] * 10 ** (k // 5) if k % 5 else 10 ** (k // 5)
    return n


def plot_attention(A, labels, path, *, title: str | None = None):
    """Save an L×H grid of attention matrices ``A`` ``(L, H, ℓ_z, ℓ_x)`` as a PNG.

    Each panel shows ``A[l, h]`` in the paper's orientation: row t_z (the key attended to),
    column t_x (the query); each column sums to 1. ``labels``: ℓ token labels for the ticks.
    Up to ℓ = 16 every position is labelled with its token; beyond, every n-th
    (:func:`tick_step`) with its position and token (``"8 a"``), the others get a bare tick.
    """
    A = np.asarray(A, dtype=np.float64)
    L, H, ell, _ = A.shape
    if len(labels) != ell:
        raise ValueError(f"plot_attention: {len(labels)} labels for {ell} positions")
    size = min(4.0, max(1.8, 0.12 * ell))
    fig = _figure(size * H + 0.8, size * L + 0.6)
    axes = fig.subplots(L, H, squeeze=False)
    step = tick_step(ell)
    ticks = list(range(0, ell, step))
    names = [labels[t] if step == 1 else f"{t} {labels[t]}" for t in ticks]
    fontsize = 7 if ell <= 16 else 6
    image = None
    for l in range(L):
        for h in range(H):
            ax = axes[l, h]
            image = ax.imshow(A[l, h], vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
            ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
            ax.set_yticks(ticks, names, fontsize=fontsize)
            if step > 1:  # a bare tick at every position
                ax.set_xticks(range(ell), minor=True)
                ax.set_yticks(range(ell), minor=True)
            if l == 0:
                ax.set_title(f"head {h + 1}", fontsize=9)
            if h == 0:
                ax.set_ylabel(f"layer {l + 1}\nkey t_z", fontsize=9)
            if l == L - 1:
                ax.set_xlabel("query t_x", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, format="png")
    return path


def plot_loss(
    history,
    path,
    *,
    held_out=None,
    unigram=None,
    title=None,
    unit="nats/token",
    held_out_curve=None,
):
    """Save the per-step training loss (and its running mean) as a PNG; ``held_out`` (the final
    held-out loss) and ``unigram`` (the unigram entropy) are drawn as horizontal lines;
    ``held_out_curve``: ``(steps, losses)`` of the periodic held-out evaluations, drawn as a curve
    over the steps (then ``held_out`` is not drawn as a line)."""
    history = np.asarray(history, dtype=np.float64)
    steps = np.arange(1, len(history) + 1)
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    ax.plot(steps, history, color="0.75", linewidth=0.8, label="training loss (per step)")
    window = max(1, len(history) // 25)
    if len(history) >= window > 1:
        smooth = np.convolve(history, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="C0", label=f"running mean ({window} steps)")
    if unigram is not None:
        ax.axhline(unigram, color="C3", linestyle=":", label=f"unigram entropy {unigram:.2f}")
    if held_out_curve is not None and len(held_out_curve[0]):
        eval_steps, eval_losses = held_out_curve
        ax.plot(
            eval_steps,
            eval_losses,
            color="C2",
            marker="o",
            markersize=3,
            label=f"held-out loss (last {eval_losses[-1]:.2f})",
        )
    elif held_out is not None:
        ax.axhline(held_out, color="C2", linestyle="--", label=f"held-out loss {held_out:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss ({unit})")
    ax.set_xlim(1, max(2, len(history)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, format="png")
    return path
