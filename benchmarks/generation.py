"""Generation throughput: cached Algorithm 14 vs the literal Algorithm 14 vs transformers' generate.

GPT-2-like configuration (issue 9): L=4, H=4, d_e=256, d_mlp=1024, N_V=512, ℓ_max=256, float32,
batch 1, a prompt of 16 tokens, 240 new tokens, temperature 1 (pure sampling: no top-k/top-p).

All contenders are timed round-robin (one call each per round, ``--repeats`` rounds, medians
reported), so that a change in the machine's load hits each of them alike; every first call
(compilation, warm-up) is reported separately and not timed.

- ours, cached: ``formal_algorithms.cache.d_inference_cached`` (one jitted while-loop over steps).
- ours, literal: ``formal_algorithms.inference.d_inference``, the full forward on the whole
  sequence at every step, jitted once per length. Compiling 240 lengths takes minutes on a small
  CPU, so by default its time is measured per step at ``--literal-lengths`` sequence lengths
  and the time of a 240-token run is the sum of the
  per-step times over lengths 16..255, linearly interpolated between the measured lengths.
  ``--literal-full`` runs the whole 240-token generation instead (after compiling every length).
- transformers: ``GPT2LMHeadModel.generate`` with its KV cache, same sizes, random weights,
  ``do_sample=True, temperature=1.0, top_k=0, top_p=1.0``, ``min_new_tokens = max_new_tokens``
  (so all 240 tokens are generated), for each ``torch.set_num_threads`` in ``--threads``
  (default 1 and all cores: XLA uses all cores; torch at batch 1 is often faster with one thread,
  and on a busy machine its spinning threads can be much slower). The fastest setting is the
  reference for the ratio; every setting is in the JSON.

The load average before and after is recorded: other processes on the machine slow every
implementation, unevenly.

Usage:  python benchmarks/generation.py --json benchmarks/generation.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import formal_algorithms as fa
from formal_algorithms.cache import d_inference_cached
from formal_algorithms.inference import _d_step, d_inference, step_key

CONFIG = dict(N_V=512, ell_max=256, L=4, H=4, d_e=256, d_mlp=1024)


def first_call(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def round_robin(runs: dict, rounds: int) -> dict:
    """Wall times of every ``runs[name]()``, interleaved round by round, so that a change in the
    machine's load affects every contender alike. Each call blocks until its result is on the host."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def cached_contender(theta, prompt, ell_gen):
    key = jax.random.key(1)

    def run():
        np.asarray(d_inference_cached(prompt, theta, key, ell_gen=ell_gen))

    return run


def literal_step_contender(theta, n):
    """Exactly one pass of d_inference's loop body (lines 3-6) on a sequence of length n."""
    key = jax.random.key(2)
    x = jnp.asarray(np.random.default_rng(n).integers(0, CONFIG["N_V"] - 3, n), jnp.int32)

    def run():
        y = _d_step(x, theta, step_key(key, 0), 1.0, activation=fa.gelu, eps=fa.EPS)
        np.asarray(jnp.concatenate([x, y[None].astype(x.dtype)]))

    return run


def literal_full_contender(theta, prompt, ell_gen):
    key = jax.random.key(1)

    def run():
        np.asarray(d_inference(prompt, theta, key, ell_gen=ell_gen))

    return run


def hf_contender(prompt, ell_gen, threads):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=CONFIG["N_V"], n_positions=CONFIG["ell_max"], n_embd=CONFIG["d_e"],
        n_layer=CONFIG["L"], n_head=CONFIG["H"], n_inner=CONFIG["d_mlp"],
        bos_token_id=CONFIG["N_V"] - 2, eos_token_id=CONFIG["N_V"] - 1,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    input_ids = torch.as_tensor(np.asarray(prompt)[None, :], dtype=torch.long)
    kwargs = dict(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=ell_gen,
        min_new_tokens=ell_gen, use_cache=True, pad_token_id=0,
        attention_mask=torch.ones_like(input_ids),
    )  # fmt: skip

    def run():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            out = model.generate(input_ids, **kwargs)
        assert out.shape[1] == input_ids.shape[1] + ell_gen, out.shape  # all ell_gen generated

    return run, dict(torch=torch.__version__, transformers=transformers.__version__)


def summary(times, tokens):
    median = statistics.median(times)
    return dict(median_s=median, times_s=times, tokens_per_s=tokens / median)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="benchmarks/generation.json", help="output JSON path")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length")
    parser.add_argument("--ell-gen", type=int, default=240, help="tokens to generate")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (medians reported)")
    parser.add_argument("--literal-lengths", type=int, nargs="+",
                        default=[16, 48, 96, 144, 192, 255], help="lengths timed for the literal")  # fmt: skip
    parser.add_argument("--literal-full", action="store_true",
                        help="time full literal runs (compiles every length: minutes)")  # fmt: skip
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count()}),
                        help="torch thread counts to try; the fastest is the reference")  # fmt: skip
    parser.add_argument("--skip-hf", action="store_true", help="do not run transformers")
    args = parser.parse_args(argv)

    theta = fa.init_d_transformer(jax.random.key(0), **CONFIG)  # float32
    prompt = np.random.default_rng(0).integers(0, CONFIG["N_V"] - 3, args.prompt).astype(np.int32)
    last = args.prompt + args.ell_gen - 1  # the longest sequence the literal form feeds
    lengths = sorted(
        {n for n in args.literal_lengths if args.prompt <= n <= last} | {args.prompt, last}
    )
    results = dict(
        config=dict(CONFIG, dtype="float32", batch=1, prompt=args.prompt, ell_gen=args.ell_gen,
                    torch_threads=args.threads, rounds=args.repeats),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), jax=jax.__version__,
                     backend=jax.default_backend(), loadavg_before=os.getloadavg()),
    )  # fmt: skip
    print(f"config: {results['config']}")

    runs, versions = {"cached": cached_contender(theta, prompt, args.ell_gen)}, {}
    if args.literal_full:
        runs["literal"] = literal_full_contender(theta, prompt, args.ell_gen)
    else:
        for n in lengths:
            runs[f"literal_step_{n}"] = literal_step_contender(theta, n)
    if not args.skip_hf:
        for t in args.threads:
            runs[f"hf_{t}"], versions = hf_contender(prompt, args.ell_gen, t)
    first = {}
    for name, fn in runs.items():  # compile / warm up; reported, not timed
        first[name] = first_call(fn)
        print(f"first call of {name}: {first[name]:.2f} s")
    times = round_robin(runs, args.repeats)
    results["machine"]["loadavg_after"] = os.getloadavg()

    results["cached"] = dict(summary(times["cached"], args.ell_gen), first_call_s=first["cached"])
    if args.literal_full:
        results["literal"] = dict(summary(times["literal"], args.ell_gen),
                                  first_call_s=first["literal"], method="full runs")  # fmt: skip
    else:
        per_step = {n: statistics.median(times[f"literal_step_{n}"]) for n in lengths}
        feeds = np.arange(args.prompt, args.prompt + args.ell_gen)  # lengths a run feeds
        estimate = float(np.interp(feeds, lengths, [per_step[n] for n in lengths]).sum())
        results["literal"] = dict(
            per_step_median_s=per_step,
            per_step_times_s={n: times[f"literal_step_{n}"] for n in lengths},
            first_call_s={n: first[f"literal_step_{n}"] for n in lengths},
            estimated_run_s=estimate, tokens_per_s=args.ell_gen / estimate,
            method="sum over the fed lengths of per-step medians, linearly interpolated",
        )  # fmt: skip
        for n in lengths:
            print(f"literal step at length {n:4d}: {1e3 * per_step[n]:8.2f} ms (median)")
    rows = [
        ("ours, cached Alg 14", results["cached"]),
        ("ours, literal Alg 14", results["literal"]),
    ]
    if not args.skip_hf:
        by_threads = {t: dict(summary(times[f"hf_{t}"], args.ell_gen),
                              first_call_s=first[f"hf_{t}"]) for t in args.threads}  # fmt: skip
        for t, r in by_threads.items():
            rows.append((f"transformers generate, {t} thr", r))
        best = max(by_threads, key=lambda t: by_threads[t]["tokens_per_s"])
        results["hf_generate"] = dict(by_threads[best], threads=best, versions=versions)
        results["hf_generate_by_threads"] = {str(t): r for t, r in by_threads.items()}

    cached = results["cached"]["tokens_per_s"]
    print(f"\n{'implementation':32s} {'tokens/s':>10s} {'cached / this':>14s}")
    for name, r in rows:
        print(f"{name:32s} {r['tokens_per_s']:10.1f} {cached / r['tokens_per_s']:13.1f}x")
    results["ratios"] = {"cached_over_literal": cached / results["literal"]["tokens_per_s"]}
    if "hf_generate" in results:
        results["ratios"]["cached_over_best_hf"] = cached / results["hf_generate"]["tokens_per_s"]
    print(f"ratios: {results['ratios']}; load average before/after: "
          f"{results['machine']['loadavg_before']} / {results['machine']['loadavg_after']}")  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
