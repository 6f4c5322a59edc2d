"""Several processes, one training run: JAX's own distributed runtime (``jax.distributed``).

Each process runs the same program: :func:`initialize` joins the processes (from the environment
a scheduler sets), after which ``jax.devices()`` lists every device of every process and
:mod:`.parallel`'s mesh, :func:`~.parallel.shard_batch` and :func:`~.parallel.data_parallel_train`
span them all. Every process reads the same data and runs the same loop with the same key, so it
builds the same global batch, and copies only the rows of its own devices to them; XLA's
collectives (gloo between CPU processes, the default of ``jax_cpu_collectives_implementation``)
sum the gradients. The run equals the one-process run on the same number of devices step for step,
up to the summation order of floating-point reductions (float64: θ within 1e-10 after 3 AdamW
steps, ``tests/practice/test_distributed.py``).

The environment (one scheme, read by :func:`initialize`, set by :func:`launch` for its children)::

    FA_COORDINATOR     host:port of process 0's coordinator service (every process gives the same)
    FA_NUM_PROCESSES   the number of processes
    FA_PROCESS_ID      this process's id, 0 .. FA_NUM_PROCESSES - 1

None of them set: one process, nothing to join. :func:`launch` starts N such processes on this
machine (each with its own number of virtual CPU devices) and stops them all, with one error that
names the process, if any fails or the time limit passes. :func:`host_copy` gathers a sharded
tree onto every process (e.g. for process 0 to write a checkpoint); :func:`gathered` makes a
data-parallel trainer hand back such host copies, so that a training loop built for one process
(:func:`.fit.fit`, the command line's runs) evaluates and saves them unchanged.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ..paper.checks import fail

VARIABLES = ("FA_COORDINATOR", "FA_NUM_PROCESSES", "FA_PROCESS_ID")


class ProcessFailed(RuntimeError):
    """A process of a :func:`launch` died (``returncode`` set) or outlived the time limit
    (``returncode`` None); the other processes were stopped. ``outputs``: each process's
    ``(returncode, stdout, stderr)`` as far as it got."""

    def __init__(self, message, *, process, returncode, outputs):
        super().__init__(message)
        self.process, self.returncode, self.outputs = process, returncode, outputs


def _int_variable(environ, name, low, high=None):
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"an integer >= {low}" if high is None else f"an integer in {low} .. {high}"
        fail("initialize", f"environment variable {name}", f"must be {bound}, got {text!r}")
    return value


def initialize(environ=None, *, timeout: int = 60) -> tuple[int, int]:
    """Join this process to the run the ``FA_*`` variables of ``environ`` (default
    ``os.environ``, only read) describe, with ``jax.distributed.initialize(coordinator,
    num_processes, process_id, initialization_timeout=timeout)``. Returns ``(process_id,
    num_processes)``; ``(0, 1)`` without joining anything when none of the variables is set.
    Must run before any other JAX computation of the process."""
    environ = os.environ if environ is None else environ
    given = [name for name in VARIABLES if name in environ]
    if not given:
        return 0, 1
    missing = [name for name in VARIABLES if name not in environ]
    if missing:
        fail("initialize", "environment", f"sets {given} but not {missing}; set all three or none")
    _check_seconds("initialize", timeout, finite=True)
    _check_coordinator(environ["FA_COORDINATOR"])
    num_processes = _int_variable(environ, "FA_NUM_PROCESSES", 1)
    process_id = _int_variable(environ, "FA_PROCESS_ID", 0, num_processes - 1)
    jax.distributed.initialize(
        environ["FA_COORDINATOR"],
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(1, round(timeout)),
    )
    return process_id, num_processes


def described(environ=None) -> bool:
    """Whether ``environ`` (default ``os.environ``) makes this process a member of a multi-process
    run (any ``FA_*`` variable set; :func:`initialize` then joins it or refuses the variables)."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in VARIABLES)


def host_copy(tree):
    """Every array of ``tree`` whole, as numpy, on every process. The arrays split over the
    processes are all-gathered by one compiled program for all of them (JAX's
    ``process_allgather`` compiles and runs one per array); a replicated array is copied from
    this process's own copy, and a process's own array (e.g. any array of a single process) as
    it is."""
    leaves, treedef = jax.tree.flatten(tree)
    split = [i for i, x in enumerate(leaves) if _split_over_processes(x)]
    named = [i for i in split if isinstance(leaves[i].sharding, NamedSharding)]
    if named:
        whole = tuple(NamedSharding(leaves[i].sharding.mesh, P()) for i in named)
        gathered = jax.jit(lambda *xs: xs, out_shardings=whole)(*(leaves[i] for i in named))
        for i, x in zip(named, gathered, strict=True):
            leaves[i] = x
    for i in set(split) - set(named):  # another kind of sharding: JAX's own gather
        leaves[i] = multihost_utils.process_allgather(leaves[i], tiled=True)
    return treedef.unflatten([_on_host(x) for x in leaves])


def _split_over_processes(x) -> bool:
    return isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated)


def _on_host(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # replicated: our own copy
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def gathered(train):
    """``train`` (e.g. :func:`.parallel.data_parallel_train` with its mesh) handing back θ and the
    optimiser state as :func:`host_copy` copies, the same on every process; so is the last good
    state a :class:`~.trainer.NonFiniteError` carries (every process sees the same replicated
    loss, so all raise it at the same step and gather together). Ctrl-C
    (:class:`~.trainer.TrainingInterrupted`) may stop each process at a different step, so its
    state is not gathered: it becomes a plain ``KeyboardInterrupt``, and the caller keeps the
    state of its last call (what :func:`.fit.fit` does). Every process must call it."""
    from .trainer import NonFiniteError, TrainingInterrupted

    def train_gathered(*args, **kw):
        try:
            theta, history, *opt_state = train(*args, **kw)
        except NonFiniteError as error:
            error.theta, error.opt_state = host_copy((error.theta, error.opt_state))
            raise
        except TrainingInterrupted:
            raise KeyboardInterrupt from None
        theta, opt_state = host_copy((theta, opt_state))
        return (theta, history, *opt_state)

    return train_gathered


def free_port(host: str = "localhost") -> int:
    """A TCP port no one listens on now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_environment(environ, coordinator, n_processes, process_id, devices_per_process):
    """``environ`` plus the ``FA_*`` variables and ``devices_per_process`` virtual CPU devices."""
    flags = [f for f in environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    return {
        **environ,
        "FA_COORDINATOR": coordinator,
        "FA_NUM_PROCESSES": str(n_processes),
        "FA_PROCESS_ID": str(process_id),
        "XLA_FLAGS": " ".join(flags),
        "JAX_PLATFORMS": "cpu",
    }


def _check_launch(n_processes, devices_per_process, argv, timeout):
    for name, value in (("n_processes", n_processes), ("devices_per_process", devices_per_process)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail("launch", name, f"must be an integer >= 1, got {value!r}")
    if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
        fail("launch", "argv", f"must be a non-empty list of strings, got {argv!r}", TypeError)
    _check_seconds("launch", timeout)


def _check_seconds(function, timeout, *, finite=False):
    """A time limit: a number of seconds > 0 (infinity, no limit, unless ``finite``)."""
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        fail(function, "timeout", f"must be a number of seconds > 0, got {timeout!r}")
    if finite and timeout == float("inf"):
        fail(function, "timeout", "must be finite: JAX's runtime waits a whole number of seconds")


def _check_coordinator(text):
    """``FA_COORDINATOR``: ``host:port``, the port an integer in 1 .. 65535."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        fail(
            "initialize",
            "environment variable FA_COORDINATOR",
            f"must be host:port (a port in 1 .. 65535), got {text!r}",
        )


def launch(n_processes, devices_per_process, argv, *, timeout, environ=None, show=None):
    """Run ``python *argv`` as ``n_processes`` processes on this machine, each with
    ``devices_per_process`` CPU devices and the ``FA_*`` variables (coordinator on a free local
    port), and wait at most ``timeout`` seconds. Returns each process's ``(returncode, stdout,
    stderr)``; process ``show`` (e.g. 0 for a command line's progress) writes straight to this
    process's stdout and stderr instead, its strings empty. Raises :class:`ProcessFailed` naming
    the first process that exits non-zero, or the ones still running at the time limit, after
    killing every process still running."""
    _check_launch(n_processes, devices_per_process, argv, timeout)
    if show is not None and show not in range(n_processes):
        fail("launch", "show", f"must be None or a process id 0 .. {n_processes - 1}, got {show!r}")
    environ = dict(os.environ if environ is None else environ)
    coordinator = f"localhost:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        logs = [
            (pathlib.Path(tmp, f"{i}.out"), pathlib.Path(tmp, f"{i}.err"))
            for i in range(n_processes)
        ]
        children = []
        try:  # whatever happens here (Ctrl-C included), no child outlives the call
            for i, (out, err) in enumerate(logs):
                env = child_environment(environ, coordinator, n_processes, i, devices_per_process)
                with out.open("w") as o, err.open("w") as e:
                    o, e = (None, None) if i == show else (o, e)  # None: this process's own
                    children.append(
                        subprocess.Popen([sys.executable, *argv], env=env, stdout=o, stderr=e)
                    )
            failure = _wait(children, time.monotonic() + timeout)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                child.wait()
        outputs = [
            (c.returncode, o.read_text(), e.read_text())
            for c, (o, e) in zip(children, logs, strict=True)
        ]
    if failure is None:
        return outputs
    process, status = failure
    if status is None:
        message = f"launch: processes {process} still running after {timeout} s; all stopped"
    else:
        tail = outputs[process[0]][2].strip().splitlines()[-5:]
        message = (
            f"launch: process {process[0]} of {n_processes} exited with status {status}; "
            "the others were stopped. Its last error lines:\n" + "\n".join(tail)
        )
    raise ProcessFailed(message, process=process[0], returncode=status, outputs=outputs)


def _wait(children, deadline):
    """None when every child exited 0; else ``([i], status)`` of the first to fail or
    ``(the ones still running, None)`` at the deadline."""
    while True:
        codes = [c.poll() for c in children]
        bad = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if bad:
            return [bad[0]], codes[bad[0]]
        if all(code == 0 for code in codes):
            return None
        if time.monotonic() >= deadline:
            return [i for i, code in enumerate(codes) if code is None], None
        time.sleep(0.05)
