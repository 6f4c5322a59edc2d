"""Start-up of the command line, cold and warm: the wall time of whole ``formal-algorithms``
processes, as a user waits for them (issue 19).

``python -m formal_algorithms.benchmark.startup [--repeats 3] [--json FILE]`` times, side by side
in one run (round-robin: each round runs every setting once, so that a change in the machine's
load hits all alike; medians over the rounds):

- ``train --steps 10 --sample-length 16`` (the default model and corpus) and
  ``sample --length 16`` (from the checkpoint that train wrote);
- each with the persistent compilation cache off (``FA_NO_COMPILE_CACHE=1``), cold (an empty cache
  directory each time) and warm (a cache filled by an earlier run of the same command).

Each process is ``python -m formal_algorithms …`` with ``XDG_CACHE_HOME`` pointing at a temporary
directory, so the user's own cache is neither used nor touched. Besides the wall time, the CPU
time (user + system) of each process is recorded: on a machine shared with other work the wall
time grows with the load, the CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = ("no cache", "cold cache", "warm cache")


def commands(run_dir: pathlib.Path) -> dict:
    """The timed commands (argument lists after ``python -m formal_algorithms``)."""
    train = "train --steps 10 --sample-length 16 --force --out".split() + [str(run_dir)]
    sample = ["sample", "--checkpoint", str(run_dir / "model.safetensors"), "--length", "16"]
    return {"train --steps 10": train, "sample --length 16": sample}


def timed(argv, env) -> tuple[float, float]:
    """Wall and CPU time (s) of one ``python -m formal_algorithms ARGV`` process; it must
    succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "formal_algorithms", *argv], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def environment(cache_home: pathlib.Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FA_NO_COMPILE_CACHE"}
    if cache_home is None:
        env["FA_NO_COMPILE_CACHE"] = "1"
    else:
        env["XDG_CACHE_HOME"] = str(cache_home)
    return env


def run(repeats: int = 3, workdir=None) -> dict:
    """``{command: {setting: [(wall, cpu) seconds, …]}}`` over ``repeats`` rounds, in
    ``workdir`` (default: a temporary directory, removed afterwards)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fa-startup-") as tmp:
            return run(repeats, tmp)
    root = pathlib.Path(workdir)
    run_dir = root / "run"
    warm = root / "warm-cache"
    cmds = commands(run_dir)
    timed(cmds["train --steps 10"], environment(None))  # the checkpoint that sample reads
    for argv in cmds.values():  # fill the warm cache
        timed(argv, environment(warm))
    times = {name: {s: [] for s in SETTINGS} for name in cmds}
    for r in range(repeats):
        for name, argv in cmds.items():
            for setting in SETTINGS:
                if setting == "no cache":
                    env = environment(None)
                elif setting == "cold cache":
                    cold = root / f"cold-{r}-{len(times[name][setting])}-{name.split()[0]}"
                    env = environment(cold)
                else:
                    env = environment(warm)
                times[name][setting].append(timed(argv, env))
                if setting == "cold cache":
                    shutil.rmtree(cold, ignore_errors=True)
    return times


def table(times: dict) -> str:
    """The medians side by side, one row per command: wall time, then CPU time."""
    lines = []
    for what, index in (("median wall time (s)", 0), ("median CPU time (s)", 1)):
        lines.append(f"{what:<22}" + "".join(f"{s:>12}" for s in SETTINGS))
        for name, by_setting in times.items():
            cells = "".join(
                f"{statistics.median(t[index] for t in by_setting[s]):>12.2f}" for s in SETTINGS
            )
            lines.append(f"{name:<22}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m formal_algorithms.benchmark.startup",
        description="Cold and warm wall times of 'formal-algorithms train --steps 10' and "
        "'sample --length 16', with and without the persistent compilation cache.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the times as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = run(args.repeats)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(table(times))
    print(f"{args.repeats} rounds, load average {load:.1f} before, {load_after:.1f} after")
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps({"times": times, "load": [load, load_after]}, indent=1), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
