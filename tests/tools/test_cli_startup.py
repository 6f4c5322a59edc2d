"""The command line's persistent compilation cache (issue 19): a real process fills it in the
user's cache directory, a corrupted cache changes nothing but the time, and it can be switched
off; the start-up benchmark's table. The cache's speed-up is measured by
``python -m formal_algorithms.benchmark.startup`` (docs/cli.md), not asserted here."""

import os
import pathlib
import subprocess
import sys

import jax

from formal_algorithms import cli
from formal_algorithms.benchmark import startup
from formal_algorithms.cli import compile_cache
from formal_algorithms.paper.parameters import init_d_transformer
from formal_algorithms.paper.tokenization import CharTokenizer
from formal_algorithms.practice.checkpoint import save_checkpoint


def sample_process(checkpoint, cache_home):
    env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV_OFF}
    env["XDG_CACHE_HOME"] = str(cache_home)
    return subprocess.run(
        [sys.executable, "-m", "formal_algorithms", "sample", "--checkpoint", str(checkpoint),
         "--prompt", "ab", "--length", "8", "--seed", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_cache_is_filled_and_a_corrupted_one_changes_nothing(tmp_path):
    tokenizer = CharTokenizer(tuple("abcde "))
    theta = init_d_transformer(jax.random.key(0), N_V=tokenizer.N_V, ell_max=16, L=1, H=1,
                               d_e=8, d_mlp=16)  # fmt: skip
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", theta, tokenizer=tokenizer.to_dict(),
                                 extra={"activation": "gelu"})  # fmt: skip
    first = sample_process(checkpoint, tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    cache = tmp_path / "cache" / "formal_algorithms" / "jax"
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries, "the first run wrote no compiled program"
    for path in entries:  # damage every entry: flipped bytes, then cut in half
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 3 :] = bytes(b ^ 0x5A for b in blob[len(blob) // 3 :])
        path.write_bytes(bytes(blob[: max(1, len(blob) // 2)]))
    second = sample_process(checkpoint, tmp_path / "cache")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert second.stderr == "", second.stderr  # no warning, no traceback


def test_switching_the_cache_off_and_its_place():
    assert compile_cache.wanted(False, {})
    assert compile_cache.wanted(False, {"FA_NO_COMPILE_CACHE": "0"})
    assert not compile_cache.wanted(False, {"FA_NO_COMPILE_CACHE": "1"})
    assert not compile_cache.wanted(True, {})
    path = compile_cache.cache_dir({"XDG_CACHE_HOME": "/somewhere"})
    assert path == pathlib.Path("/somewhere/formal_algorithms/jax")
    parser = cli.build_parser()
    for command in ("train", "sample", "info", "seq2seq", "mlm"):
        args = parser.parse_args([command, "--no-compile-cache", *(["x"] * (command == "info"))])
        assert args.no_compile_cache and compile_cache.setup(args) is None
    # in-process calls leave JAX's configuration alone
    before = jax.config.jax_compilation_cache_dir
    cli.main(["info", "--no-compile-cache", "/nonexistent.safetensors"])
    assert jax.config.jax_compilation_cache_dir == before


def test_an_unwritable_cache_directory_switches_the_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert compile_cache.enable(blocker / "jax") is None


def test_the_startup_table_puts_the_settings_side_by_side():
    times = {
        "train --steps 10": {"no cache": [(9.0, 7), (8.0, 6), (10.0, 8)], "cold cache": [(9.5, 8)],
                             "warm cache": [(4.0, 3), (3.0, 2)]},
        "sample --length 16": {"no cache": [(5.0, 4)], "cold cache": [(5.2, 4)],
                               "warm cache": [(1.4, 1)]},
    }  # fmt: skip
    lines = startup.table(times).splitlines()
    assert lines[0].split()[:3] == ["median", "wall", "time"]
    assert lines[0].split()[-6:] == ["no", "cache", "cold", "cache", "warm", "cache"]
    assert lines[1].split()[-3:] == ["9.00", "9.50", "3.50"]  # medians
    assert lines[2].split()[-3:] == ["5.00", "5.20", "1.40"]
    assert lines[3].split()[:3] == ["median", "CPU", "time"]
    assert lines[4].split()[-3:] == ["7.00", "8.00", "2.50"]
    run_dir = pathlib.Path("/r")
    assert startup.commands(run_dir)["sample --length 16"][-2:] == ["--length", "16"]
