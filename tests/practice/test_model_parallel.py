"""Megatron-style model parallelism (practice.parallel, ``param_sharding="megatron"``) on a 2 × 2
(data, model) mesh of 4 virtual CPU devices, in a subprocess (the device count is fixed when JAX
starts). Algorithm 5's heads and the MLP's hidden units are split over ``"model"``; the
expectation is the unsharded paper algorithm (and ``trainer.train``) on one device, float64.
"""

import textwrap

import pytest
from virtual_devices import run_alone

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import formal_algorithms as fa
    from formal_algorithms.practice import parallel, trainer

    def max_diff(a, b):
        return max(float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y)))) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

    mesh = parallel.model_mesh(2)
    out = dict(mesh=dict(mesh.shape))
    hp = dict(N_V=10, ell_max=8, H=2, d_e=8, d_mlp=16)
    theta = fa.init_d_transformer(jax.random.key(0), L=1, **hp, dtype=jnp.float64)
    theta_ed = fa.init_ed_transformer(jax.random.key(1), L_enc=1, L_dec=1, **hp, dtype=jnp.float64)
    split = lambda th: jax.device_put(th, parallel.tree_shardings(mesh, th, "megatron"))
    x, z = jnp.array([1, 4, 2, 7, 3, 0]), jnp.array([5, 2, 9, 1])

    # Algorithm 10 and Algorithm 8 (self-, cross-attention, both MLPs) on split θ vs one device
    # (each compiled once for its layout: unsplit θ on one device, split θ on the mesh)
    th = split(theta)
    d, ed = jax.jit(fa.d_transformer), jax.jit(fa.ed_transformer)
    out["forward_d"] = max_diff(d(x, th), d(x, theta))
    out["forward_ed"] = max_diff(ed(z, x, split(theta_ed)), ed(z, x, theta_ed))
    out["unsplit"] = [str(a.sharding) for a in (d(x, theta), theta.W_e)]
    layer = th.layers[0]
    out["layout"] = {name: [str(tuple(w.sharding.spec)), list(w.addressable_shards[0].data.shape)]
                     for name, w in dict(W_q=layer.W.W_q, b_v=layer.W.b_v, W_o=layer.W.W_o,
                                         W_mlp1=layer.W_mlp1, W_mlp2=layer.W_mlp2,
                                         gamma1=layer.gamma1, W_e=th.W_e).items()}

    rng = np.random.default_rng(0)
    data = [rng.integers(0, 10, k) for k in rng.integers(3, 9, 16)]
    opt = trainer.make_optimizer(1e-2, decay=None, clip_norm=1.0)
    kw = dict(optimizer=opt, N_steps=3, batch_size=8)
    single, h1 = trainer.train(theta, data, jax.random.key(2), **kw)
    mp, h4, state = parallel.data_parallel_train(theta, data, jax.random.key(2), mesh=mesh,
                                                 param_sharding="megatron",
                                                 return_opt_state=True, **kw)
    mu = state[1][0].mu.layers[0].W.W_q  # Adam's first moment of W_q: split like W_q
    out["train"] = dict(theta=max_diff(single, mp), moved=max_diff(single, theta),
                        history=float(np.max(np.abs(h1 - h4))),
                        W_q=str(tuple(mp.layers[0].W.W_q.sharding.spec)),
                        mu=str(tuple(mu.sharding.spec)))
    # the split forward of one sequence (no data axis) sums its heads' partial W_o products and
    # its hidden units' partial W_mlp2 products across "model": an all-reduce in the program
    hlo = d.lower(x, th).compile().as_text()
    out["all_reduce"] = hlo.count("all-reduce-start") + hlo.count("all-reduce(")
    out["all_gather"] = hlo.count("all-gather")

    errors = {}
    for name, make in dict(
        heads=lambda: parallel.tree_shardings(
            mesh, fa.init_d_transformer(jax.random.key(0), L=1, **dict(hp, H=1)), "megatron"),
        no_model_axis=lambda: parallel.tree_shardings(parallel.data_mesh(), theta, "megatron"),
        n_model=lambda: parallel.model_mesh(3),
    ).items():
        try:
            make()
            errors[name] = None
        except ValueError as error:
            errors[name] = str(error)
    out["errors"] = errors
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def report():
    return run_alone(SCRIPT, devices=4)


def test_heads_and_hidden_units_are_split_over_the_model_axis(report):
    assert report["mesh"] == {"data": 2, "model": 2}
    layout = report["layout"]
    assert layout["W_q"] == ["('model',)", [1, 4, 8]]  # (H, d_attn, d_e): one head of 2 each
    assert layout["b_v"] == ["('model',)", [1, 4]]
    assert layout["W_o"] == ["(None, 'model')", [8, 4]]  # (d_e, H d_mid): its head's columns
    assert layout["W_mlp1"] == ["('model',)", [8, 8]]  # (d_mlp, d_e): half the hidden units
    assert layout["W_mlp2"] == ["(None, 'model')", [8, 8]]  # (d_e, d_mlp): their columns
    assert layout["gamma1"] == ["()", [8]] and layout["W_e"] == ["()", [8, 10]]


def test_split_forward_equals_the_unsharded_algorithms(report):
    assert report["forward_d"] < 1e-12  # Algorithm 10
    assert report["forward_ed"] < 1e-12  # Algorithm 8: encoder, decoder, cross-attention
    assert all(s.startswith("SingleDeviceSharding") for s in report["unsplit"])  # the expectation
    # the split forward computes on the split θ: one all-reduce of partial sums after W_o (the
    # heads) and one after W_mlp2 (the hidden units), in its one layer, and nothing gathered
    assert report["all_reduce"] == 2 and report["all_gather"] == 0


def test_data_and_model_parallel_training_equals_one_device(report):
    r = report["train"]
    assert r["moved"] > 1e-3  # training changed θ, so agreement is not trivial
    assert r["theta"] < 1e-10 and r["history"] < 1e-12
    assert r["W_q"] == "('model',)" and r["mu"] == "('model',)"


def test_megatron_errors_name_what_does_not_divide(report):
    errors = report["errors"]
    assert "megatron_spec: argument 'W_q' has size 1 along axis 0" in errors["heads"]
    assert "'model' axis" in errors["no_model_axis"]
    assert "model_mesh: argument 'n_model' must divide the 4 devices, got 3" in errors["n_model"]
