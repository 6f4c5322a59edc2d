"""Issue 9's benchmark, one run: ours vs PyTorch/transformers, forward, training step, generation,
GFLOP/s vs the measured matmul peak. See formal_algorithms/benchmark.py and docs/performance.md.

Usage:  python benchmarks/run.py --json benchmarks/results.json --png benchmarks/results.png
        python benchmarks/run.py --quick   # tiny sizes: checks that everything runs
"""

import argparse

from formal_algorithms import benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--png", help="write a bar chart here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args(argv)
    results = benchmark.run(
        quick=args.quick, repeats=args.repeats, skip_generation=args.skip_generation
    )
    benchmark.write(results, args.json, args.png)


if __name__ == "__main__":
    main()
