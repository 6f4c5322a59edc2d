"""Issue 9's benchmark, one run: ours vs PyTorch/transformers, forward, training step, generation,
GFLOP/s vs the measured matmul peak. See formal_algorithms/benchmark.py and docs/performance.md.

Usage:  python benchmarks/run.py --json benchmarks/results.json --png benchmarks/results.png
        python benchmarks/run.py --quick   # tiny sizes: checks that everything runs
The same as ``formal-algorithms benchmark [options]``.
"""

import argparse

from formal_algorithms import benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchmark.add_arguments(parser)
    benchmark.main(parser.parse_args(argv))


if __name__ == "__main__":
    main()
