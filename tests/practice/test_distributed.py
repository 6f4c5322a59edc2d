"""Multi-process training (practice.distributed + practice.parallel) on this machine.

The expectation is one process with 4 virtual CPU devices and no ``jax.distributed`` (a plain
subprocess, none of the ``FA_*`` variables set); the run under test is the same script started by
:func:`distributed.launch` as 2 processes × 2 devices, joined by ``jax.distributed`` over gloo.
Both train a tiny DTransformer in float64 for 3 AdamW steps, data-parallel with replicated θ and
with FSDP-sharded θ, and write their θ as checkpoints (process 0 writes, from
:func:`distributed.host_copy`); this (1-device) test process loads them and compares. The
2-process run also resumes from the 1-process run's checkpoint after step 1 (the other way
round). float64 for the reason test_parallel.py gives (Adam amplifies reduction-order noise).
"""

import json
import os
import textwrap
import threading
import time

import jax
import numpy as np
import pytest
from virtual_devices import run_alone

from formal_algorithms.practice import checkpoint, distributed, trainer

SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from formal_algorithms.practice import distributed
    pid, n = distributed.initialize(timeout=30)
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import formal_algorithms as fa
    from formal_algorithms.practice import checkpoint, parallel, trainer

    out_dir, tag = pathlib.Path(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 10, k) for k in rng.integers(3, 9, 16)]
    opt = trainer.make_optimizer(1e-2, decay=None, clip_norm=1.0)
    mesh = parallel.data_mesh()
    theta = fa.init_d_transformer(jax.random.key(0), N_V=10, ell_max=8, L=1, H=2, d_e=8,
                                  d_mlp=16, dtype=jnp.float64)
    kw = dict(mesh=mesh, optimizer=opt, N_steps=3, batch_size=8, min_shard_size=64)
    out = dict(process=pid, processes=jax.process_count(), devices=jax.device_count(),
               local_devices=jax.local_device_count(),
               rows=list(parallel.process_rows(mesh, 8)[::3]))
    batch = parallel.shard_batch(mesh, trainer.make_batch(theta, data, range(8), 8))
    out["shards"] = sorted(s.index[0].start for s in batch["x"].addressable_shards)

    def save(name, th, state=None):
        th, state = distributed.host_copy((th, state))
        if pid == 0:
            checkpoint.save_checkpoint(out_dir / f"{tag}-{name}.safetensors", th, opt_state=state)

    if tag == "single":  # first, the state after step 1, for the other run to resume from
        th, _, st = parallel.data_parallel_train(theta, data, jax.random.key(1),
                                                 return_opt_state=True, **dict(kw, N_steps=1))
        save("step1", th, st)
    layouts = dict(replicated=mesh, fsdp=mesh, megatron=parallel.model_mesh(2))
    for ps, on in layouts.items():
        th, history, st = parallel.data_parallel_train(theta, data, jax.random.key(1),
                                                       param_sharding=ps, return_opt_state=True,
                                                       **dict(kw, mesh=on))
        out[ps] = [float(h) for h in history]
        save(ps, th, st)
        W = th.layers[0].W_mlp1
        out[f"{ps}_local_rows"] = sorted(s.data.shape[0] for s in W.addressable_shards)
    if tag == "multi":  # resume from the 1-process run's step 1 (written first, see above)
        step1 = out_dir / "single-step1.safetensors"
        for _ in range(1200):
            if step1.exists():
                break
            time.sleep(0.1)
        ck = checkpoint.load_checkpoint(step1, opt_state_template=opt.init(theta))
        th, history = parallel.data_parallel_train(ck.theta, data, jax.random.key(1),
                                                   opt_state=ck.opt_state, start_step=1, **kw)
        out["resumed"] = [float(h) for h in history]
        save("resumed", th)
    print(json.dumps(out))
    """
)

FAILING = textwrap.dedent(
    """
    import os, sys, time
    from formal_algorithms.practice import distributed
    if sys.argv[1] == "never-joins" and os.environ["FA_PROCESS_ID"] == "1":
        time.sleep(600)
    pid, n = distributed.initialize(timeout=60)
    import jax, jax.numpy as jnp
    from formal_algorithms.practice import parallel
    if pid == 1:
        os._exit(3)  # a crash: no atexit, so no jax.distributed shutdown barrier
    mesh = parallel.data_mesh()
    x = parallel.shard_batch(mesh, {"x": jnp.arange(4.0)})["x"]
    print(float(jax.jit(jnp.sum)(x)))  # a collective that waits for process 1 for ever
    """
)


def _env():
    return {k: v for k, v in os.environ.items() if k not in distributed.VARIABLES}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    single = {}  # the two runs overlap: the 1-process one in a thread
    thread = threading.Thread(
        target=lambda: single.update(run_alone(SCRIPT, str(out), "single", timeout=120))
    )
    thread.start()
    try:
        outputs = distributed.launch(2, 2, ["-c", SCRIPT, str(out), "multi"], timeout=120)
    finally:
        thread.join()
    assert single, "the 1-process run failed (its error is printed above)"
    reports = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in outputs]
    return out, single, reports


def _theta(path):
    return checkpoint.load_checkpoint(path).theta


def _opt_state(path):
    theta = _theta(path)
    optimizer = trainer.make_optimizer(1e-2, decay=None, clip_norm=1.0)
    return checkpoint.load_checkpoint(path, opt_state_template=optimizer.init(theta)).opt_state


def _max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_two_processes_of_two_devices_are_one_mesh_of_four(runs):
    _, single, multi = runs
    assert (single["processes"], single["devices"], single["local_devices"]) == (1, 4, 4)
    for pid, report in enumerate(multi):
        assert report["process"] == pid
        assert (report["processes"], report["devices"], report["local_devices"]) == (2, 4, 2)
    # each process holds (and was fed) only its own 4 of the 8 rows; one process holds all 8
    assert [r["rows"] for r in multi] == [[0, 3], [4, 7]] and single["rows"] == [0, 3, 6]
    assert [r["shards"] for r in multi] == [[0, 2], [4, 6]] and single["shards"] == [0, 2, 4, 6]
    # FSDP: W_mlp1 (16 × 8) is split in 4 blocks of 4 rows; each process holds two of them
    assert [r["fsdp_local_rows"] for r in multi] == [[4, 4], [4, 4]]
    # Megatron on the (data 2, model 2) mesh: each process holds both halves of the hidden units
    assert [r["megatron_local_rows"] for r in multi] == [[8, 8], [8, 8]]
    assert single["replicated_local_rows"] == [16] * 4


@pytest.mark.parametrize("ps", ["replicated", "fsdp", "megatron"])
def test_two_processes_equal_one_process_step_for_step(runs, ps):
    out, single, multi = runs
    assert len(single[ps]) == 3
    for report in multi:  # every process sees the same (global) losses
        assert np.max(np.abs(np.subtract(report[ps], single[ps]))) < 1e-12
    expected = _theta(out / f"single-{ps}.safetensors")
    theta = _theta(out / f"multi-{ps}.safetensors")  # written by process 0, read here
    assert _max_diff(theta, expected) < 1e-10
    # and the optimiser state (Adam's moments, FSDP-sharded too, gathered): resumable anywhere
    expected = _opt_state(out / f"single-{ps}.safetensors")
    assert _max_diff(_opt_state(out / f"multi-{ps}.safetensors"), expected) < 1e-10
    start = _theta(out / "single-step1.safetensors")
    assert _max_diff(theta, start) > 1e-3  # steps 2 and 3 moved θ: agreement is not trivial


def test_two_processes_resume_from_a_one_process_checkpoint(runs):
    out, single, multi = runs
    for report in multi:
        assert np.max(np.abs(np.subtract(report["resumed"], single["replicated"][1:]))) < 1e-12
    expected = _theta(out / "single-replicated.safetensors")
    assert _max_diff(_theta(out / "multi-resumed.safetensors"), expected) < 1e-10


@pytest.mark.parametrize("how, limit", [("dies", 60), ("never-joins", 3)])
def test_a_failed_process_stops_the_others_with_one_error(how, limit):
    start = time.monotonic()
    with pytest.raises(distributed.ProcessFailed) as caught:
        distributed.launch(2, 1, ["-c", FAILING, how], timeout=limit, environ=_env())
    elapsed = time.monotonic() - start
    error = caught.value
    if how == "dies":  # reported as soon as it happens, long before the time limit
        assert str(error).startswith("launch: process 1 of 2 exited with status 3; the others")
        assert error.process == 1 and error.returncode == 3 and elapsed < limit
    else:
        assert str(error) == "launch: processes [0, 1] still running after 3 s; all stopped"
        assert error.returncode is None and elapsed >= limit
    assert all(code is not None for code, _, _ in error.outputs)  # nobody left running
    assert error.outputs[0][0] != 0  # process 0 was stopped, it did not finish


def test_an_interrupted_launch_leaves_no_process_running(monkeypatch):
    children = []

    def interrupted(started, deadline):  # Ctrl-C while launch waits
        children.extend(started)
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "_wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distributed.launch(2, 1, ["-c", "import time; time.sleep(600)"], timeout=600)
    assert len(children) == 2 and all(c.returncode is not None for c in children)


def test_launch_shows_one_process_output_as_it_comes(capfd):
    script = "import os; print('process', os.environ['FA_PROCESS_ID'], 'of', os.environ['FA_NUM_PROCESSES'])"
    outputs = distributed.launch(2, 1, ["-c", script], timeout=60, show=1)
    assert outputs == [(0, "process 0 of 2\n", ""), (0, "", "")]
    assert capfd.readouterr().out == "process 1 of 2\n"  # written to this process's stdout


def test_initialize_reads_the_environment_only():
    assert distributed.initialize({}) == (0, 1)  # nothing set: one process, nothing joined
    with pytest.raises(ValueError, match="initialize: argument 'environment'.*FA_PROCESS_ID"):
        distributed.initialize({"FA_COORDINATOR": "h:1", "FA_NUM_PROCESSES": "2"})
    bad = {"FA_COORDINATOR": "h:1", "FA_NUM_PROCESSES": "2", "FA_PROCESS_ID": "2"}
    with pytest.raises(ValueError, match="FA_PROCESS_ID.*0 .. 1, got '2'"):
        distributed.initialize(bad)
    # issue 29: a coordinator without its port, and time limits that would hang or mean nothing
    good = {**bad, "FA_PROCESS_ID": "0"}
    for address in ("localhost", "localhost:", "localhost:0", "localhost:http", ":1234"):
        with pytest.raises(ValueError, match=rf"FA_COORDINATOR' must be host:port .*'{address}'"):
            distributed.initialize({**good, "FA_COORDINATOR": address})
    for timeout in (-1, 0, float("nan"), "60", True):
        with pytest.raises(ValueError, match="initialize: argument 'timeout' must be a number"):
            distributed.initialize(good, timeout=timeout)
    with pytest.raises(ValueError, match="initialize: argument 'timeout' must be finite"):
        distributed.initialize(good, timeout=float("inf"))
    with pytest.raises(ValueError, match="launch: argument 'n_processes'"):
        distributed.launch(0, 1, ["-c", "pass"], timeout=1)
    with pytest.raises(TypeError, match="launch: argument 'argv'"):
        distributed.launch(1, 1, "-c pass", timeout=1)
    with pytest.raises(
        ValueError, match="launch: argument 'show' must be None or a process id 0 .. 1"
    ):
        distributed.launch(2, 1, ["-c", "pass"], timeout=1, show=2)
