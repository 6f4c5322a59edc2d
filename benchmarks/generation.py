"""Generation throughput: cached Algorithm 14 vs the literal Algorithm 14 vs transformers' generate.

GPT-2-like configuration (issue 9): L=4, H=4, d_e=256, d_mlp=1024, N_V=512, ℓ_max=256, float32,
batch 1, a prompt of 16 tokens, 240 new tokens, temperature 1 (pure sampling: no top-k/top-p).

All contenders are timed round-robin (one call each per round, ``--repeats`` rounds, medians
reported), so that a change in the machine's load hits each of them alike; every first call
(compilation, warm-up) is reported separately and not timed.

The contenders and the timing are ``formal_algorithms.benchmark``'s (``generation``), which
``benchmarks/run.py`` also runs; this script runs the generation part alone:

- ours, cached: ``formal_algorithms.practice.cache.d_inference_cached`` (one jitted while-loop over steps).
- ours, literal: ``formal_algorithms.paper.inference.d_inference``, the full forward on the whole
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

import jax

from formal_algorithms import benchmark

CONFIG = dict(N_V=512, ell_max=256, L=4, H=4, d_e=256, d_mlp=1024)


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
    args = parser.parse_args(argv)

    gen = dict(prompt=args.prompt, ell_gen=args.ell_gen, literal_lengths=args.literal_lengths)
    results = dict(
        config=dict(CONFIG, dtype="float32", batch=1, **gen, torch_threads=args.threads,
                    rounds=args.repeats),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), jax=jax.__version__,
                     backend=jax.default_backend(), loadavg_before=os.getloadavg()),
    )  # fmt: skip
    print(f"config: {results['config']}")
    results.update(benchmark.generation(CONFIG, gen, args.repeats, args.threads,
                                        literal_full=args.literal_full, log=print))  # fmt: skip
    results["machine"]["loadavg_after"] = os.getloadavg()

    cached = results["cached"]["tokens_per_s"]
    rows = [
        ("ours, cached Alg 14", results["cached"]),
        ("ours, literal Alg 14", results["literal"]),
    ]
    rows += [(f"transformers generate, {t} thr", r)
             for t, r in results["hf_generate_by_threads"].items()]  # fmt: skip
    print(f"\n{'implementation':32s} {'tokens/s':>10s} {'cached / this':>14s}")
    for name, r in rows:
        print(f"{name:32s} {r['tokens_per_s']:10.1f} {cached / r['tokens_per_s']:13.1f}x")
    results["ratios"] = {
        "cached_over_literal": cached / results["literal"]["tokens_per_s"],
        "cached_over_best_hf": cached / results["hf_generate"]["tokens_per_s"],
    }
    print(f"ratios: {results['ratios']}; load average before/after: "
          f"{results['machine']['loadavg_before']} / {results['machine']['loadavg_after']}")  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
