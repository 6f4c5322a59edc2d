"""``formal-algorithms train --processes 2`` (issue 31): the command
line's run as 2 processes joined by jax.distributed equals the ordinary one-process run step for step,
resumes across process counts both ways, and ends with one line naming a process that dies, its
last checkpoint intact.

The expectations are ordinary runs in this process (``cli.main``); every checkpoint they write is
copied aside at its step (``Run.save`` wrapped, as tests/tools/test_cli_run.py does). All runs are
float64 (``JAX_ENABLE_X64``, which this suite's process has and the launched processes inherit),
so "equal" means equal up to the summation order of the all-reduce (1e-9). The two multi-process
runs are real command lines (``python -m formal_algorithms``) that run while this process
computes the expectations:

- the dying run (2 processes of 1 device): 4000 steps evaluated every 5; once its first
  checkpoint is on disk, its process 1 is killed (SIGKILL). Its checkpoint is compared with the
  ordinary run's at the same step, and then resumed here, in one process, for 5 more steps.
- the resumed run (2 processes of 2 devices, θ FSDP-sharded): the ordinary 4-step run's
  checkpoint after step 2 (its W_mlp1 and W_mlp2 of 2**14 numbers, large enough to be split),
  continued by ``formal-algorithms train --resume`` started as a cluster's scheduler would
  (``distributed.launch``: the FA_* variables set, no ``--processes``).
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from formal_algorithms import cli
from formal_algorithms.cli import runs
from formal_algorithms.paper.tokenization import pydoc_topics_text
from formal_algorithms.practice import distributed
from formal_algorithms.practice.checkpoint import load_checkpoint

TINY = ["--d-e", "8", "--layers", "1", "--heads", "2", "--batch-size", "4", "--ell-max", "16"]
LONG = ["--steps", "4000", "--eval-every", "5"]
CHECKPOINT = "model.safetensors"
HANG_LIMIT = 60  # seconds from the kill to the command's end: past it, the run hung


def command(*args):
    return [sys.executable, "-m", "formal_algorithms", *map(str, args)]


def quiet_main(*args):
    with open(os.devnull, "w") as null:
        sys_out, sys_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = null
        try:
            return cli.main([str(a) for a in args])
        finally:
            sys.stdout, sys.stderr = sys_out, sys_err


def copying_saves(stops):
    """``Run.save`` that also copies every ``model.safetensors`` it writes to ``DIR@step`` and
    raises Ctrl-C once after the copy at ``stops[DIR name]`` (a dict the caller may add to)."""
    real = runs.Run.save

    def save(self, path, *args, step, **kw):
        written = real(self, path, *args, step=step, **kw)
        copy = path.parent.with_name(f"{path.parent.name}@{step}")
        if path.name == CHECKPOINT and not copy.exists():
            copy.mkdir()
            shutil.copy(path, copy / path.name)
            if stops.get(path.parent.name) == step:
                raise KeyboardInterrupt
        return written

    return save


def process_of(parent: int, process_id: int) -> int | None:
    """The pid of the child of ``parent`` that runs as process ``process_id`` (its FA_PROCESS_ID)."""
    for entry in pathlib.Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and f"FA_PROCESS_ID={process_id}".encode() in environ:
            return int(entry.name)
    return None


def kill_process_1(parent, checkpoint, report):
    """Once ``checkpoint`` exists, kill process 1 of ``parent``'s run; then wait for ``parent``
    to end, stopping everything if it outlives HANG_LIMIT (the test then fails, not hangs)."""
    while not checkpoint.exists() and parent.poll() is None:
        time.sleep(0.02)
    pid = process_of(parent.pid, 1)
    report["killed"] = pid is not None
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    try:
        parent.wait(HANG_LIMIT)
    except subprocess.TimeoutExpired:
        report["hung"] = True
        for i in (0, 1):
            if (child := process_of(parent.pid, i)) is not None:
                os.kill(child, signal.SIGKILL)
        parent.kill()
    report["seconds"] = time.monotonic() - start


def launch_into(report, argv, env):
    """``distributed.launch`` of 2 processes × 2 devices, its outputs (or its error) in ``report``."""
    try:
        report["outputs"] = distributed.launch(2, 2, argv, timeout=300, environ=env)
    except distributed.ProcessFailed as error:
        report["error"] = str(error)


@pytest.fixture(scope="module")
def runs_(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    corpus = root / "text.txt"
    corpus.write_text(pydoc_topics_text()[:3000], encoding="utf-8")
    common = ["train", "--text", corpus, *TINY, "--sample-length", "2"]
    env = dict(os.environ, JAX_ENABLE_X64="1")
    started, resumed, resumer = [], {}, None

    def start(*args):
        process = subprocess.Popen(command(*args), env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        started.append(process)
        return process

    failing, failure = start(*common, *LONG, "--processes", 2, "--out", root / "dies"), {}
    watcher = threading.Thread(
        target=kill_process_1, args=(failing, root / "dies" / CHECKPOINT, failure)
    )
    watcher.start()
    mp, stops = pytest.MonkeyPatch(), {"long": 40}
    mp.setattr(runs.Run, "save", copying_saves(stops))
    try:
        short = [*common, "--d-mlp", "2048", "--steps", "4", "--eval-every", "2"]  # W_mlp1: 2**14
        assert quiet_main(*short, "--out", root / "short") == 0
        # as a scheduler starts it: the FA_* variables set, no --processes (distributed.launch)
        argv = ["-m", "formal_algorithms", *map(str, common), "--resume", str(root / "short@2"),
                "--shard", "fsdp"]  # fmt: skip
        resumer = threading.Thread(target=launch_into, args=(resumed, argv, env))
        resumer.start()
        assert quiet_main(*common, *LONG, "--out", root / "long") == 130  # stopped at step 40
        watcher.join()
        failure.update(zip(("out", "err"), failing.communicate(), strict=True))
        failure["code"] = failing.returncode
        failure["step"] = step = load_checkpoint(root / "dies" / CHECKPOINT).extra["step"]
        shutil.copytree(root / "dies", root / "died")  # as the dying run left it
        stops["dies"] = step + 5
        failure["resumed"] = quiet_main("train", "--resume", root / "dies", "--text", corpus)
        resumer.join()
    finally:
        mp.undo()
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
        watcher.join()
        if resumer is not None:
            resumer.join()
    assert "outputs" in resumed, resumed.get("error")
    return dict(root=root, failure=failure, resumed=resumed)


def max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def assert_equal_runs(path, expected_path, step):
    """Two run checkpoints at ``step``: θ, optimizer state, every step's loss, every evaluation."""
    got, expected = load_checkpoint(path), load_checkpoint(expected_path)
    assert got.extra["step"] == expected.extra["step"] == step
    assert max_diff(got.theta, expected.theta) < 1e-9
    template = runs.make_optimizer(1.0, 1, 0, 0.0).init(expected.theta)  # its structure only
    states = [
        load_checkpoint(p, opt_state_template=template).opt_state for p in (path, expected_path)
    ]
    assert max_diff(*states) < 1e-9
    losses = got.arrays["loss_history"], expected.arrays["loss_history"]
    assert losses[0].shape == losses[1].shape == (step,)
    assert np.max(np.abs(losses[0] - losses[1])) < 1e-6  # saved as float32
    for e, f in zip(got.extra["evals"], expected.extra["evals"], strict=True):
        assert e["step"] == f["step"] and e["n_targets"] == f["n_targets"]
        assert abs(e["held_out_loss"] - f["held_out_loss"]) < 1e-9
    return got, expected


def test_a_dying_process_ends_the_run_with_one_line_and_no_hang(runs_):
    failure = runs_["failure"]
    assert failure["killed"] and "hung" not in failure, failure.get("err", "")[-2000:]
    assert failure["code"] == 1
    err = failure["err"]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("formal-algorithms: error:")]
    assert errors[-1] == (
        "formal-algorithms: error: process 1 of 2 was killed by signal 9 (SIGKILL); "
        "the other processes were stopped"
    )
    # process 0 may report its own side first (a collective whose peer is gone), in one line
    assert all(
        line.startswith("formal-algorithms: error: process 0 of 2: ") for line in errors[:-1]
    ), errors
    assert len(errors) <= 2
    out = failure["out"]
    assert "processes   2 × 1 CPU devices joined by jax.distributed" in out  # 1 by default
    assert "each step data-parallel (2 of its 4 sequences on each device)" in out


def test_the_dying_runs_checkpoint_is_intact_and_equals_one_process(runs_):
    root, step = runs_["root"], runs_["failure"]["step"]
    assert step % 5 == 0 and 5 <= step <= 35  # an evaluation's checkpoint, before the kill
    # load_checkpoint checks the file's format and SHA-256 digest; the run was in progress
    got, _ = assert_equal_runs(root / "died" / CHECKPOINT, root / f"long@{step}" / CHECKPOINT, step)
    assert got.extra["status"] == "in progress"
    best = load_checkpoint(root / "died" / "best.safetensors")
    assert best.extra["step"] <= step


def test_a_two_process_checkpoint_resumes_in_one_process(runs_):
    root, failure = runs_["root"], runs_["failure"]
    step = failure["step"] + 5
    assert failure["resumed"] == 130  # stopped after the next evaluation, as the expectation was
    assert_equal_runs(root / f"dies@{step}" / CHECKPOINT, root / f"long@{step}" / CHECKPOINT, step)


def test_a_one_process_checkpoint_resumes_in_two_processes(runs_):
    root, outputs = runs_["root"], runs_["resumed"]["outputs"]
    out = outputs[0][1]  # process 0's stdout: the run's output
    assert "resumed" in out and "at step 2 of 4" in out
    assert "processes   2 × 2 CPU devices" in out
    assert "FSDP-sharded (2 of θ's 21 arrays split over the devices)" in out
    got, expected = assert_equal_runs(root / "short@2" / CHECKPOINT, root / "short" / CHECKPOINT, 4)
    assert got.extra["status"] == expected.extra["status"] == "finished"
    assert (root / "short@2" / "loss.png").exists()  # process 0 finished the run: plot, sample
    assert "sample      (Algorithm 14" in out and "sample" not in outputs[1][1]  # process 0 only


@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices-per-process", "2"], "--devices-per-process needs --processes N"),
        (["--shard", "fsdp"], "--shard fsdp needs --processes N (or the FA_* variables"),
        (["--processes", "2", "--devices-per-process", "2", "--batch-size", "6"],
         "--batch-size 6 is not a multiple of the 4 devices of --processes 2 × 2"),
    ],
)  # fmt: skip
def test_process_options_are_checked_before_any_process_starts(args, message, tmp_path, capsys):
    code = cli.main(["train", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"formal-algorithms: error: {message}")
    assert err.count("\n") == 1 and not (tmp_path / "run" / CHECKPOINT).exists()
    with pytest.raises(SystemExit, match="2"):
        cli.main(["train", "--processes", "0"])
    assert "--processes must be at least 1, got 0" in capsys.readouterr().err


def test_the_failure_line_names_the_process_and_its_own_error():
    from formal_algorithms.practice.distributed import ProcessFailed

    err = "train: 50%|█| 2/4\rformal-algorithms: error: process 1 of 2: --text 'x' does not exist\n"
    outputs = [(-9, "", ""), (1, "", err)]
    failed = ProcessFailed("launch: ...", process=1, returncode=1, outputs=outputs)
    assert runs.failed_line(failed, 2) == (
        "process 1 of 2 exited with status 1; the other processes were stopped; its error: "
        "--text 'x' does not exist"
    )
    killed = ProcessFailed("launch: ...", process=0, returncode=-9, outputs=outputs)
    assert runs.failed_line(killed, 2) == (
        "process 0 of 2 was killed by signal 9 (SIGKILL); the other processes were stopped"
    )


def test_ctrl_c_while_the_processes_run_ends_with_one_line(monkeypatch):
    from formal_algorithms.practice import distributed

    def interrupted(*args, **kw):  # distributed.launch kills its processes, then re-raises
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "launch", interrupted)
    args = cli.build_parser().parse_args(["train", "--processes", "2"])
    args.argv = ["train", "--processes", "2"]
    with pytest.raises(KeyboardInterrupt, match=r"^interrupted; the 2 processes were stopped$"):
        runs.launch_processes(args)
