"""Timing and counting shared by every contender: round-robin medians, warm-up, threads, FLOPs,
the measured matmul peak, the benchmark's sizes."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

GPT2_LIKE = dict(N_V=512, ell_max=256, L=4, H=4, d_e=256, d_mlp=1024, batch=8)

SEQ2SEQ = dict(N_V=512, ell_max=128, L_enc=2, L_dec=2, H=4, d_e=256, d_mlp=1024, batch=8)

QUICK_D = dict(N_V=64, ell_max=32, L=2, H=2, d_e=32, d_mlp=64, batch=4)

QUICK_ED = dict(N_V=64, ell_max=16, L_enc=1, L_dec=1, H=2, d_e=32, d_mlp=64, batch=4)

GENERATION = dict(prompt=16, ell_gen=240, literal_lengths=(16, 96, 176, 255))

QUICK_GENERATION = dict(prompt=4, ell_gen=12, literal_lengths=(4, 15))

LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.01  # torch.optim.AdamW's default weight decay


def round_robin(runs: dict, rounds: int) -> dict:
    """Wall times of each ``runs[name]()`` (which must block until done), interleaved by round."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def warm_up(runs: dict) -> dict:
    first = {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    return first


def tokens(rng, B, ell, N_V):
    return rng.integers(0, N_V - 3, (B, ell)).astype(np.int32)


def xla_flops(compiled):
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def analytic_train_flops_d(cfg) -> float:
    """Matmul FLOPs of one training step of Algorithm 10 (forward ×3 for forward + backward).

    Per layer and token: Q, K, V, output projections ``4·2·d_e²``, MLP ``2·2·d_e·d_mlp``, scores
    and weighted sum ``2·2·ℓ·d_e`` (the full ℓ×ℓ product: the causal mask does not skip work);
    plus the unembedding ``2·d_e·N_V`` per token.
    """
    d, ell, B = cfg["d_e"], cfg["ell_max"], cfg["batch"]
    per_token = cfg["L"] * (8 * d * d + 4 * d * cfg["d_mlp"] + 4 * ell * d) + 2 * d * cfg["N_V"]
    return 3.0 * per_token * B * ell


def matmul_peak(n: int, repeats: int) -> dict:
    """float32 GFLOP/s of a jitted ``n×n @ n×n`` (XLA) and of ``torch.mm``, medians, same run."""
    import torch

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    ta = torch.randn(n, n)
    runs = {
        "jax": lambda: dot(a, a).block_until_ready(),
        "torch": lambda: torch.mm(ta, ta),
    }
    warm_up(runs)
    times = round_robin(runs, repeats)
    flops = 2.0 * n**3
    return {
        k: dict(median_s=statistics.median(t), gflops=flops / statistics.median(t) / 1e9)
        for k, t in times.items()
    }


def with_threads(fn, threads):
    import torch

    def run():
        torch.set_num_threads(threads)
        return fn()

    return run


def summary(times, tokens, first=None):
    median = statistics.median(times)
    out = dict(median_s=median, times_s=times, tokens_per_s=tokens / median)
    if first is not None:
        out["first_call_s"] = first
    return out
