"""Issue 9's benchmark: ours vs the PyTorch implementations people would pick, side by side, one run.

Measured on this machine, each contender warmed up (compiled) first and then timed round-robin
(one call each per round, medians over ``repeats`` rounds, so that a change in the machine's load
hits every contender alike):

- forward throughput (tokens/s) of a batch: ours ``jax.jit(jax.vmap(d_transformer_logits))`` vs
  ``transformers.GPT2LMHeadModel`` (GPT-2-like configuration), and
  ``jax.jit(jax.vmap(ed_transformer_logits))`` vs ``torch.nn.Transformer`` with token and learned
  position embeddings and an unembedding (Algorithm 8's shape; seq2seq configuration). PyTorch in
  eval mode, ``no_grad``, dropout 0, timed with ``torch.set_num_threads(os.cpu_count())`` and with
  1 thread (on a loaded machine torch's spinning OpenMP threads can be far slower); the faster
  setting is the reference for the ratios, every setting is in the JSON.
- training-step throughput (tokens/s) with AdamW: ours ``trainer.train_step`` (the padded losses,
  ``optax.adamw``) vs the same PyTorch models (``loss.backward()``, ``torch.optim.AdamW.step()``).
- generation (batch 1, prompt 16, 240 new tokens): our cached Algorithm 14 vs the literal Algorithm
  14 vs ``GPT2LMHeadModel.generate`` with its cache (the literal form is timed per step at a few
  lengths and summed over the 240 fed lengths, see :func:`generation`).
- the same for :mod:`.fast`'s batch-as-columns form (``*_fast``; equal results,
  tests/test_fast.py).
- achieved GFLOP/s of our training step (FLOPs from XLA's cost analysis of the compiled step, and
  analytically) against the measured float32 matmul peak (a jitted 2048×2048 ``jnp.dot``).

Everything is float32. The load average before and after is recorded: other processes slow every
contender, unevenly. Needs the ``train`` and ``interop`` extras (optax, torch, transformers,
matplotlib).

Contenders by family: :mod:`.ours`, :mod:`.pytorch`, :mod:`.generation`; timing in :mod:`.common`.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform

import jax
import numpy as np

from .common import (
    GENERATION,
    GPT2_LIKE,
    QUICK_D,
    QUICK_ED,
    QUICK_GENERATION,
    SEQ2SEQ,
    analytic_train_flops_d,
    matmul_peak,
    round_robin,
    summary,
    warm_up,
    with_threads,
)
from .generation import generation
from .ours import ours_d, ours_ed
from .pytorch import torch_gpt2, torch_seq2seq


def run(
    *, quick: bool = False, repeats: int | None = None, skip_generation: bool = False, log=print
) -> dict:
    """Run the whole benchmark; returns the results dict (see :func:`write`)."""
    import torch

    threads = os.cpu_count()
    torch_threads = sorted({1, threads})
    repeats = repeats or (3 if quick else 7)
    cfg_d, cfg_ed = (QUICK_D, QUICK_ED) if quick else (GPT2_LIKE, SEQ2SEQ)
    gen = QUICK_GENERATION if quick else GENERATION
    results = dict(
        config=dict(
            gpt2_like=cfg_d,
            seq2seq=cfg_ed,
            generation=gen,
            dtype="float32",
            repeats=repeats,
            torch_threads=torch_threads,
            quick=quick,
        ),
        machine=dict(
            platform=platform.platform(),
            cpus=os.cpu_count(),
            jax=jax.__version__,
            torch=torch.__version__,
            backend=jax.default_backend(),
            loadavg_before=os.getloadavg(),
        ),
    )
    log(f"config: {results['config']}\nload average: {os.getloadavg()}")
    runs, xla_flops = _contenders(cfg_d, cfg_ed, torch_threads, results)
    first = warm_up(runs)
    log("warm-up (s): " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()))
    times = round_robin(runs, repeats)
    tok_d = cfg_d["batch"] * cfg_d["ell_max"]
    tok_ed = cfg_ed["batch"] * cfg_ed["ell_max"]  # decoder tokens (the encoder's are extra work)
    for name, t in times.items():
        tokens = tok_d if ("_d_" in name or name.startswith("gpt2")) else tok_ed
        results[name] = summary(t, tokens, first[name])
    for name in TORCH_RUNS:
        # The reference is PyTorch's fastest thread setting (every setting is in the JSON).
        best = max(torch_threads, key=lambda t: results[f"{name}_{t}thr"]["tokens_per_s"])
        results[name] = dict(results[f"{name}_{best}thr"], threads=best)
    results["matmul_peak"] = matmul_peak(256 if quick else 2048, repeats)
    results["ours_d_train_flops"] = _flops(results, cfg_d, xla_flops)
    if not skip_generation:
        results["generation"] = generation(cfg_d, gen, repeats, torch_threads)
    results["machine"]["loadavg_after"] = os.getloadavg()
    results["ratios"] = ratios(results)
    log(table(results))
    return results


TORCH_RUNS = ("gpt2_forward", "gpt2_train", "torch_transformer_forward", "torch_transformer_train")


def _contenders(cfg_d, cfg_ed, torch_threads, results):
    """Every timed function, ours (literal and fast) and PyTorch's at each thread count, and
    XLA's flop count of our training step."""
    rng = np.random.default_rng(0)
    d_fwd, d_step, xla_flops = ours_d(cfg_d, rng)
    d_fwd_fast, d_step_fast, _ = ours_d(cfg_d, rng, fast_path=True)
    ed_fwd, ed_step = ours_ed(cfg_ed, rng)
    ed_fwd_fast, ed_step_fast = ours_ed(cfg_ed, rng, fast_path=True)
    t_d_fwd, t_d_step, hf_version = torch_gpt2(cfg_d, rng)
    t_ed_fwd, t_ed_step = torch_seq2seq(cfg_ed, rng)
    results["machine"]["transformers"] = hf_version
    runs = {"ours_d_forward": d_fwd, "ours_d_train": d_step,
            "ours_d_forward_fast": d_fwd_fast, "ours_d_train_fast": d_step_fast,
            "ours_ed_forward": ed_fwd, "ours_ed_train": ed_step,
            "ours_ed_forward_fast": ed_fwd_fast, "ours_ed_train_fast": ed_step_fast}  # fmt: skip
    for name, fn in zip(TORCH_RUNS, (t_d_fwd, t_d_step, t_ed_fwd, t_ed_step), strict=True):
        for t in torch_threads:
            runs[f"{name}_{t}thr"] = with_threads(fn, t)
    return runs, xla_flops


def _flops(results, cfg_d, xla_flops) -> dict:
    """Our training step's rate in GFLOP/s (XLA's count and the analytic matmul count) and as a
    fraction of JAX's measured matmul peak."""
    peak = results["matmul_peak"]["jax"]["gflops"]
    analytic = analytic_train_flops_d(cfg_d)
    step_s = results["ours_d_train"]["median_s"]
    fast_s = results["ours_d_train_fast"]["median_s"]
    return dict(
        gflops_analytic_fast=analytic / fast_s / 1e9,
        fraction_of_jax_peak_analytic_fast=analytic / fast_s / 1e9 / peak,
        xla_cost_analysis=xla_flops,
        analytic_matmul=analytic,
        gflops_xla=xla_flops / step_s / 1e9,
        gflops_analytic=analytic / step_s / 1e9,
        fraction_of_jax_peak_xla=xla_flops / step_s / 1e9 / peak,
        fraction_of_jax_peak_analytic=analytic / step_s / 1e9 / peak,
    )


def ratios(r: dict) -> dict:
    tps = lambda name: r[name]["tokens_per_s"]  # noqa: E731
    out = {
        "forward_d_ours_over_gpt2": tps("ours_d_forward") / tps("gpt2_forward"),
        "train_d_ours_over_gpt2": tps("ours_d_train") / tps("gpt2_train"),
        "forward_ed_ours_over_torch": tps("ours_ed_forward") / tps("torch_transformer_forward"),
        "train_ed_ours_over_torch": tps("ours_ed_train") / tps("torch_transformer_train"),
        "train_d_fraction_of_matmul_peak": r["ours_d_train_flops"]["fraction_of_jax_peak_analytic"],
        "fast_forward_d_ours_over_gpt2": tps("ours_d_forward_fast") / tps("gpt2_forward"),
        "fast_train_d_ours_over_gpt2": tps("ours_d_train_fast") / tps("gpt2_train"),
        "fast_forward_ed_ours_over_torch": tps("ours_ed_forward_fast")
        / tps("torch_transformer_forward"),
        "fast_train_ed_ours_over_torch": tps("ours_ed_train_fast") / tps("torch_transformer_train"),
        "fast_train_d_fraction_of_matmul_peak": r["ours_d_train_flops"][
            "fraction_of_jax_peak_analytic_fast"
        ],
    }
    g = r.get("generation", {})
    if "cached" in g:
        c = g["cached"]["tokens_per_s"]
        out["generation_cached_over_hf_generate"] = c / g["hf_generate"]["tokens_per_s"]
        out["generation_cached_over_literal"] = c / g["literal"]["tokens_per_s"]
    return out


TARGETS = {
    "forward_d_ours_over_gpt2": 1.2, "train_d_ours_over_gpt2": 1.2,
    "forward_ed_ours_over_torch": 1.2, "train_ed_ours_over_torch": 1.2,
    "train_d_fraction_of_matmul_peak": 0.7,
    "fast_forward_d_ours_over_gpt2": 1.2, "fast_train_d_ours_over_gpt2": 1.2,
    "fast_forward_ed_ours_over_torch": 1.2, "fast_train_ed_ours_over_torch": 1.2,
    "fast_train_d_fraction_of_matmul_peak": 0.7,
    "generation_cached_over_hf_generate": 5.0, "generation_cached_over_literal": 20.0,
}  # fmt: skip


def table(r: dict) -> str:
    lines = [f"{'contender':34s} {'median s':>10s} {'tokens/s':>12s}"]
    names = [
        k for k in r if isinstance(r[k], dict) and "tokens_per_s" in r[k] and "threads" not in r[k]
    ]
    for name in names:
        lines.append(f"{name:34s} {r[name]['median_s']:10.4f} {r[name]['tokens_per_s']:12.1f}")
    for name, g in r.get("generation", {}).items():
        if isinstance(g, dict) and "tokens_per_s" in g and name != "hf_generate":
            s = g.get("median_s", g.get("estimated_run_s"))
            lines.append(f"{'generate: ' + name:34s} {s:10.4f} {g['tokens_per_s']:12.1f}")
    f, p = r["ours_d_train_flops"], r["matmul_peak"]
    lines.append(
        f"matmul peak (float32, GFLOP/s): jax {p['jax']['gflops']:.1f}, torch {p['torch']['gflops']:.1f}; "
        f"our D training step: {f['gflops_analytic']:.1f} GFLOP/s analytic, {f['gflops_xla']:.1f} by XLA's cost analysis"
    )
    lines.append(f"{'ratio':42s} {'value':>8s} {'target':>8s}")
    for k, v in r["ratios"].items():
        t = TARGETS.get(k)
        mark = "" if t is None else ("  met" if v >= t else "  NOT met")
        lines.append(f"{k:42s} {v:8.2f} {t if t else '':>8}{mark}")
    lines.append(
        f"load average before {r['machine']['loadavg_before']}, after {r['machine']['loadavg_after']}"
    )
    return "\n".join(lines)


def write(results: dict, json_path: str | None = None, png_path: str | None = None) -> None:
    """Write the results as JSON and/or a bar chart (matplotlib, Agg backend)."""
    if json_path:
        pathlib.Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
    if png_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pairs = [
            ("forward\nGPT-2-like", "ours_d_forward", "gpt2_forward", "HF GPT2LMHeadModel"),
            ("train step\nGPT-2-like", "ours_d_train", "gpt2_train", "HF GPT2LMHeadModel"),
            ("forward, fast\nGPT-2-like", "ours_d_forward_fast", "gpt2_forward", "HF GPT2"),
            ("train step, fast\nGPT-2-like", "ours_d_train_fast", "gpt2_train", "HF GPT2"),
            ("forward\nseq2seq", "ours_ed_forward", "torch_transformer_forward", "nn.Transformer"),
            ("train step\nseq2seq", "ours_ed_train", "torch_transformer_train", "nn.Transformer"),
            ("train, fast\nseq2seq", "ours_ed_train_fast", "torch_transformer_train", "nn.Tr."),
        ]
        labels = [p[0] for p in pairs]
        ours = [results[p[1]]["tokens_per_s"] for p in pairs]
        theirs = [results[p[2]]["tokens_per_s"] for p in pairs]
        g = results.get("generation", {})
        if "cached" in g:
            labels.append("generate\nbatch 1")
            ours.append(g["cached"]["tokens_per_s"])
            theirs.append(g["hf_generate"]["tokens_per_s"])
        fig, ax = plt.subplots(figsize=(9, 4.5))
        xs = np.arange(len(labels))
        ax.bar(xs - 0.2, ours, 0.4, label="formal_algorithms (JAX)")
        ax.bar(xs + 0.2, theirs, 0.4, label="PyTorch / transformers")
        if "literal" in g:
            ax.bar(
                [xs[-1] + 0.45],
                [g["literal"]["tokens_per_s"]],
                0.25,
                label="literal Alg 14 (ours)",
                color="gray",
            )
        for x, a, b in zip(xs, ours, theirs, strict=True):
            ax.text(x, max(a, b) * 1.15, f"{a / b:.2f}×", ha="center")
        ax.set_yscale("log")
        ax.set_xticks(xs, labels)
        ax.set_ylabel("tokens / s (median)")
        m = results["machine"]
        ax.set_title(f"{m['cpus']} CPUs, load {m['loadavg_before'][0]:.1f}, float32")
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        pathlib.Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=100)
        plt.close(fig)


def add_arguments(parser, count=int) -> None:
    """The benchmark's options, shared by ``benchmarks/run.py`` and ``formal-algorithms benchmark``
    (which passes its parser type of a count ≥ 1 as ``count``, so the parser refuses 0)."""
    parser.add_argument("--json", metavar="FILE.json", help="write the results here")
    parser.add_argument("--png", metavar="FILE.png", help="write a bar chart here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=count, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--skip-generation", action="store_true", help="no generation part")


def main(args) -> dict:
    """Run with parsed ``args`` (see :func:`add_arguments`), print the table, write the files."""
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    results = run(quick=args.quick, repeats=args.repeats, skip_generation=args.skip_generation)
    write(results, args.json, args.png)
    return results
