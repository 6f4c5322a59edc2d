"""Data-parallel training (formal_algorithms.practice.parallel) on 4 virtual CPU devices.

The check runs in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``: the
device count is fixed when JAX starts its backend, and the rest of the suite runs on one device.
The subprocess trains the same DTransformer (and an ETransformer, whose batch carries Algorithm
12's masking keys) with AdamW for a few steps single-device (``trainer.train``) and data-parallel
(replicated and FSDP-sharded θ), in float64, and prints what the assertions below
check: the parameters agree, the batch and the FSDP parameters really are split over 4 devices,
and the compiled step reduces its gradients across devices.

float64, because that is where equality is meaningful: in float32, Adam divides each gradient entry
by its own running RMS, so for entries whose gradient is near 0 the reduction-order noise of the
all-reduce is O(1) relative and moves them by O(η) (observed: losses equal to 5e-7, θ to 1.2e-3
after a 3e-2 move, 3 AdamW steps at η = 1e-2).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from formal_algorithms.practice import parallel

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import formal_algorithms as fa
    from formal_algorithms import parallel, trainer

    out = dict(n_devices=jax.device_count())
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 10, n) for n in rng.integers(4, 16, 16)]  # one bucket: 16
    opt = trainer.make_optimizer(1e-2, decay=None, clip_norm=1.0)
    mesh = parallel.data_mesh()

    def max_diff(a, b):
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

    hp = dict(N_V=13, ell_max=16, L=1, H=2, d_e=8, d_mlp=16)
    kw = dict(optimizer=opt, N_steps=3, batch_size=8, shuffle=False)
    theta = fa.init_d_transformer(jax.random.key(0), **hp, dtype=jnp.float64)
    single, h1 = trainer.train(theta, data, jax.random.key(1), **kw)
    moved = max_diff(single, theta)

    # float64, replicated θ, one step at a time: where the batch lives, what the step compiles to.
    state = opt.init(theta)
    step = parallel.data_parallel_step(mesh, theta, state, optimizer=opt)
    th, st = parallel.place(mesh, theta, state)
    compiled, h4 = None, []
    for start in (0, 8, 0):  # the batches of train(shuffle=False, N_steps=3) over 16 sequences
        sharded = parallel.shard_batch(mesh, trainer.make_batch(theta, data, range(start, start + 8), 8))
        if compiled is None:
            compiled = step.lower(th, st, sharded, 0.15).compile()
            out["all_reduce"] = "all-reduce" in compiled.as_text()
            out["batch_spec"] = str(tuple(sharded["x"].sharding.spec))
            out["batch_shards"] = sorted(s.data.shape[0] for s in sharded["x"].addressable_shards)
            out["batch_devices"] = len({s.device for s in sharded["x"].addressable_shards})
        th, st, loss, _ = compiled(th, st, sharded, 0.15)
        h4.append(float(loss))
    out["theta_spec"] = str(tuple(th.W_e.sharding.spec))
    out["theta_devices"] = len(th.W_e.sharding.device_set)
    out["d_float64_replicated"] = dict(theta=max_diff(single, th), moved=moved,
                                       history=float(np.max(np.abs(h1 - np.asarray(h4)))))

    # float64, FSDP-sharded θ and Adam state, through data_parallel_train.
    dp, h4 = parallel.data_parallel_train(theta, data, jax.random.key(1), mesh=mesh,
                                          param_sharding="fsdp", min_shard_size=64, **kw)
    W = dp.layers[0].W_mlp1
    out["d_float64_fsdp"] = dict(theta=max_diff(single, dp), moved=moved,
                                 history=float(np.max(np.abs(h1 - h4))),
                                 W_mlp1=str(tuple(W.sharding.spec)), W_mlp1_devices=len(W.sharding.device_set),
                                 shard_rows=W.addressable_shards[0].data.shape[0])

    # Resuming (the loop is trainer.run_steps, shared with train): 1 step, then steps 2-3.
    kw1 = dict(kw, N_steps=1)
    th1, _, st1 = parallel.data_parallel_train(theta, data, jax.random.key(1), mesh=mesh,
                                               return_opt_state=True, **kw1)
    resumed, h_rest = parallel.data_parallel_train(th1, data, jax.random.key(1), mesh=mesh,
                                                   opt_state=st1, start_step=1, **kw)
    out["resumed"] = dict(theta=max_diff(single, resumed),
                          history=float(np.max(np.abs(h1[1:] - h_rest))))

    # Algorithm 12: the batch carries one masking key per row, sharded with the rows.
    theta_e = fa.init_e_transformer(jax.random.key(2), **hp, dtype=jnp.float64)
    single, _ = trainer.train(theta_e, data, jax.random.key(3), optimizer=opt, N_steps=2,
                              batch_size=8, p_mask=0.3)
    dp, _ = parallel.data_parallel_train(theta_e, data, jax.random.key(3), mesh=mesh,
                                         optimizer=opt, N_steps=2, batch_size=8, p_mask=0.3)
    out["e_float64"] = dict(theta=max_diff(single, dp), moved=max_diff(single, theta_e))

    try:
        parallel.shard_batch(mesh, trainer.make_batch(theta, data, range(6), 6))
        out["bad_batch_error"] = None
    except ValueError as error:
        out["bad_batch_error"] = str(error)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_four_devices_in_the_subprocess_only(report):
    assert report["n_devices"] == 4
    assert jax.device_count() == 1  # this process (the rest of the suite) is untouched


def test_batch_rows_are_split_over_the_data_axis(report):
    assert report["batch_spec"] == "('data',)"
    assert report["batch_shards"] == [2, 2, 2, 2]  # 8 rows, 2 on each of 4 devices
    assert report["batch_devices"] == 4
    assert report["all_reduce"]  # the gradients are summed across devices
    assert report["theta_spec"] == "()" and report["theta_devices"] == 4
    assert report["bad_batch_error"].startswith("shard_batch: argument 'batch' has 6 rows")
    assert "4 devices" in report["bad_batch_error"]


@pytest.mark.parametrize("ps", ["replicated", "fsdp"])
def test_data_parallel_equals_single_device_float64(report, ps):
    r = report[f"d_float64_{ps}"]
    assert r["moved"] > 1e-3  # training changed θ, so agreement is not trivial
    assert r["theta"] < 1e-10 and r["history"] < 1e-12
    assert report["e_float64"]["theta"] < 1e-10 and report["e_float64"]["moved"] > 1e-3


def test_resumed_data_parallel_run_equals_the_uninterrupted_single_device_run(report):
    assert report["resumed"]["theta"] < 1e-10 and report["resumed"]["history"] < 1e-12


def test_fsdp_splits_the_parameters(report):
    r = report["d_float64_fsdp"]
    assert r["W_mlp1"] == "('data',)"  # (d_mlp = 16, d_e = 8): rows split
    assert r["W_mlp1_devices"] == 4 and r["shard_rows"] == 4


def test_tree_shardings_layout_rule():
    """The FSDP rule in this process's one-device mesh: big arrays split along their largest axis
    that the device count divides; small ones and unknown options."""
    mesh = parallel.data_mesh()
    assert parallel._leaf_spec((16, 8), 4, "data", 64) == jax.sharding.PartitionSpec("data")
    assert parallel._leaf_spec((6, 8), 4, "data", 1) == jax.sharding.PartitionSpec(None, "data")
    assert parallel._leaf_spec((6, 7), 4, "data", 1) == jax.sharding.PartitionSpec()
    assert parallel._leaf_spec((16, 8), 4, "data", 1000) == jax.sharding.PartitionSpec()
    with pytest.raises(ValueError, match="param_sharding"):
        parallel.tree_shardings(mesh, {"a": jax.numpy.ones(3)}, "tensor")
