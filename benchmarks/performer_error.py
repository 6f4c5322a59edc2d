"""FAVOR+ (Performer) attention: the error against softmax attention falls like 1/√m.

One attention head (d_attn = 8, ℓ = 32 tokens, float64) with random weights: its output under
Algorithm 4 (softmax, the exact reference, a numpy transcription) and under FAVOR+ with m random
features (``variants.performer.favor_attention``, bidirectional). For each m the script draws
``--draws`` independent Ω and reports the root-mean-square relative error
``‖Ṽ_FAVOR+ − Ṽ‖_F / ‖Ṽ‖_F`` over the draws, for i.i.d. and for orthogonal features, and the
slope of log error against log m (−½ for a Monte Carlo estimate).

``--scale`` multiplies the random weights: it sets the size of ``kᵀq/√d_attn`` and with it the
variance of the positive features (which grows like ``exp(‖q̄ + k̄‖²)``); at large scales m must be
much larger before the 1/√m regime starts.

Usage:  python benchmarks/performer_error.py [--draws 256 --plot benchmarks/performer_error.png]
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from formal_algorithms.paper.attention import AttentionParams
from formal_algorithms.variants.performer import draw_features, favor_attention

M_VALUES = (16, 32, 64, 128, 256, 512, 1024, 2048)


def problem(key, d: int, ell: int, scale: float):
    """Random ``X`` ``(d, ℓ)`` and head weights, and the exact softmax attention (numpy)."""
    keys = jax.random.split(key, 7)
    shapes = [(d, d), (d,), (d, d), (d,), (d, d), (d,)]
    W = AttentionParams(*(scale * jax.random.normal(k, s, jnp.float64)
                          for k, s in zip(keys[1:], shapes, strict=True)))  # fmt: skip
    X = jax.random.normal(keys[0], (d, ell), jnp.float64)
    Xn, w = np.asarray(X), [np.asarray(a) for a in W]
    Q, K, V = (w[i] @ Xn + w[i + 1][:, None] for i in (0, 2, 4))
    S = K.T @ Q / math.sqrt(d)
    A = np.exp(S - S.max(axis=0))
    return X, W, V @ (A / A.sum(axis=0))


def rms_errors(X, W, exact, m_values, draws: int, orthogonal: bool, seed: int = 0):
    """RMS relative error over ``draws`` draws of Ω, for each m."""
    d = X.shape[0]
    out = []
    for m in m_values:

        def error(key, m=m):
            Omega = draw_features(key, m, d, orthogonal=orthogonal, dtype=jnp.float64)
            return jnp.linalg.norm(favor_attention(X, X, W, Omega) - exact)

        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), m), draws)
        e = np.asarray(jax.jit(jax.vmap(error))(keys)) / np.linalg.norm(exact)
        out.append(float(np.sqrt(np.mean(e**2))))
    return np.asarray(out)


def slope(m_values, errors) -> float:
    return float(np.polyfit(np.log(m_values), np.log(errors), 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-attn", type=int, default=8)
    parser.add_argument("--ell", type=int, default=32)
    parser.add_argument("--scale", type=float, default=0.15)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--plot", default="benchmarks/performer_error.png")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    X, W, exact = problem(jax.random.key(0), args.d_attn, args.ell, args.scale)
    rows = {kind: rms_errors(X, W, exact, M_VALUES, args.draws, kind == "orthogonal")
            for kind in ("i.i.d.", "orthogonal")}  # fmt: skip
    print(f"d_attn = {args.d_attn}, ℓ = {args.ell}, weight scale {args.scale}, {args.draws} draws")
    print("| m | " + " | ".join(str(m) for m in M_VALUES) + " | slope |")
    print("|---|" + "---:|" * (len(M_VALUES) + 1))
    for kind, errors in rows.items():
        cells = " | ".join(f"{e:.4f}" for e in errors)
        print(f"| {kind} | {cells} | {slope(M_VALUES, errors):.3f} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.2, 3.5), dpi=100)
        for (kind, errors), style in zip(rows.items(), ("s--", "o-"), strict=True):
            ax.loglog(M_VALUES, errors, style, label=f"{kind} features "
                      f"(slope {slope(M_VALUES, errors):.2f})")  # fmt: skip
        ref = rows["i.i.d."][0] * np.sqrt(M_VALUES[0] / np.asarray(M_VALUES))
        ax.loglog(M_VALUES, ref, ":", color="grey", label="1/√m")
        ax.set_xlabel("random features m")
        ax.set_ylabel("RMS relative error of Ṽ")
        ax.set_title("FAVOR+ vs softmax attention (Algorithm 4)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
