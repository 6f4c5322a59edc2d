"""Gradient norms at initialisation, Post-LN vs Pre-LN (Xiong et al. 2020, arXiv 2002.04745).

Xiong et al. show that at initialisation the gradient of the parameters near the output is much
larger for Post-LN than for Pre-LN (Pre-LN's is scaled by about 1/√L), and that Pre-LN's
per-layer gradient norms stay roughly flat across depth. This script measures both on this CPU:

- the same θ run as Algorithm 10 (Pre-LN, ``pre_ln_d_transformer_logits``) and as its Post-LN
  form (``post_ln_d_transformer_logits``, which keeps line 10's final norm);
- θ drawn as in Xiong et al.'s setting (``--init xiong``, the default:
  ``variants.xiong_init_d_transformer``: Xavier-normal weights, unit-scale token embeddings, the
  original sinusoid as ``W_p``) or by the library's init (``--init library``: weights
  N(0, 1/fan_in), embeddings N(0, 0.02²), optionally rescaled by ``--embedding-std``);
- random token sequences, the next-token loss of Algorithm 13 (line 5) averaged over the batch;
- per layer l, the Frobenius norm of the gradient of W_o (attention output), W_mlp2 (MLP output)
  and of the whole layer, averaged over ``--seeds`` draws of θ and data;
- a depth sweep: the last layer's W_mlp2 gradient norm for L in ``--depths``.

It prints the tables and writes a plot (matplotlib, Agg backend).

Usage:  python benchmarks/ln_gradients.py [--L 6 --d-e 64 --seeds 3 --plot benchmarks/ln_gradients.png]
        python benchmarks/ln_gradients.py --init library [--embedding-std 1.0]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import formal_algorithms as fa
from formal_algorithms import variants as V

FORMS = {"Post-LN": V.post_ln_d_transformer_logits, "Pre-LN": V.pre_ln_d_transformer_logits}


def measure(L, args):
    """Mean over seeds of the per-layer gradient norms, for each form: {form: {name: (L,)}}."""
    hp = dict(N_V=args.N_V, ell_max=args.ell, L=L, H=args.H, d_e=args.d_e, d_mlp=args.d_mlp)
    out = {form: {} for form in FORMS}
    for seed in range(args.seeds):
        if args.init == "xiong":
            theta = V.xiong_init_d_transformer(jax.random.key(seed), **hp)
        else:
            theta = fa.init_d_transformer(jax.random.key(seed), **hp)
        if args.init == "library" and args.embedding_std is not None:
            # rescale the same draws; the init's std is 0.02
            scale = args.embedding_std / 0.02
            theta = theta._replace(W_e=theta.W_e * scale, W_p=theta.W_p * scale)
        xs = jax.random.randint(jax.random.key(1000 + seed), (args.batch, args.ell), 0, args.N_V)
        for form, logits in FORMS.items():
            for name, norms in V.layer_gradient_norms(logits, theta, xs).items():
                out[form].setdefault(name, []).append(norms)
    return {f: {k: np.mean(v, axis=0) for k, v in d.items()} for f, d in out.items()}


def print_layer_table(norms, L):
    names = ("W_o", "W_mlp2", "layer")
    head = "layer | " + " | ".join(f"{f} {n:>6}" for n in names for f in FORMS)
    print(head)
    print("-" * len(head))
    for l in range(L):
        cells = [f"{norms[f][n][l]:>{len(f) + 7}.3f}" for n in names for f in FORMS]
        print(f"{l + 1:>5} | " + " | ".join(cells))
    for n in names:
        post, pre = norms["Post-LN"][n], norms["Pre-LN"][n]
        print(
            f"{n:>6}: last layer Post/Pre = {post[-1] / pre[-1]:.2f};  max/min over layers: "
            f"Post-LN {post.max() / post.min():.2f}, Pre-LN {pre.max() / pre.min():.2f};  "
            f"first/last: Post-LN {post[0] / post[-1]:.2f}, Pre-LN {pre[0] / pre[-1]:.2f}"
        )


def plot(norms, L, sweep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    layers = np.arange(1, L + 1)
    for form, style in zip(FORMS, ("o-", "s--"), strict=True):
        a.plot(layers, norms[form]["W_mlp2"], style, label=f"{form} W_mlp2")
        a.plot(layers, norms[form]["W_o"], style, alpha=0.4, label=f"{form} W_o")
    a.set(xlabel="layer l", ylabel="‖∇ loss‖ at init", title=f"Per-layer gradient norms, L = {L}")
    a.set_ylim(bottom=0)
    a.legend()
    depths = np.array(sorted(sweep))
    for form, style in zip(FORMS, ("o-", "s--"), strict=True):
        b.loglog(depths, [sweep[d][form] for d in depths], style, label=form)
    ref = sweep[depths[0]]["Pre-LN"] * np.sqrt(depths[0] / depths)
    b.loglog(depths, ref, ":", color="gray", label="∝ 1/√L")
    b.set(xlabel="depth L", ylabel="last layer's ‖∇W_mlp2‖", title="Depth sweep at init")
    b.set_xticks(depths, [str(d) for d in depths])
    b.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    b.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    b.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--L", type=int, default=6)
    p.add_argument("--d-e", type=int, default=64)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--d-mlp", type=int, default=256)
    p.add_argument("--N-V", type=int, default=256)
    p.add_argument("--ell", type=int, default=32, help="sequence length (= ℓ_max)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--depths", default="2,4,6,8", help="comma-separated L for the depth sweep")
    p.add_argument("--init", choices=("xiong", "library"), default="xiong")
    p.add_argument("--embedding-std", type=float, default=None, help="with --init library")
    p.add_argument("--plot", default="benchmarks/ln_gradients.png")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    t0 = time.perf_counter()
    if args.init == "xiong":
        std = "Xiong et al.'s init (Xavier weights, W_e ~ N(0, 1), sinusoidal W_p)"
    else:
        std = "library init, embedding std " + str(args.embedding_std or 0.02)
    print(
        f"DTransformer L={args.L}, d_e={args.d_e}, H={args.H}, d_mlp={args.d_mlp}, "
        f"N_V={args.N_V}, ℓ={args.ell}, batch={args.batch}, seeds={args.seeds},\n"
        f"{std}, float32, next-token loss at initialisation\n"
    )
    norms = measure(args.L, args)
    print_layer_table(norms, args.L)

    depths = sorted({int(d) for d in args.depths.split(",")} | {args.L})
    sweep = {}
    print("\nDepth sweep: last layer's ‖∇W_mlp2‖ (mean over seeds)")
    print("    L | Post-LN | Pre-LN | Post/Pre")
    for L in depths:
        last = norms if L == args.L else measure(L, args)
        sweep[L] = {f: float(last[f]["W_mlp2"][-1]) for f in FORMS}
        post, pre = sweep[L]["Post-LN"], sweep[L]["Pre-LN"]
        print(f"{L:>5} | {post:7.3f} | {pre:6.3f} | {post / pre:8.2f}")

    plot(norms, args.L, sweep, args.plot)
    print(f"\nplot written to {args.plot}  ({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "per_layer": {
                        f: {k: v.tolist() for k, v in d.items()} for f, d in norms.items()
                    },
                    "depth_sweep": sweep,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
