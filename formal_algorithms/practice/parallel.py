"""Data-parallel training on JAX's own multi-device runtime (``jax.sharding``), paper §8 at scale.

Nothing here changes the math: the data-parallel step *is* :func:`formal_algorithms.trainer.train_step`
(the padded losses of Algorithms 11-13, ``jax.vmap`` over the batch, an optax update), compiled by
``jax.jit`` with shardings on its inputs and outputs. XLA's SPMD partitioner then runs each
device's rows of the batch locally and inserts the all-reduce that sums the gradients, so the
result equals single-device training up to the summation order of floating-point reductions.

- :func:`data_mesh`: a 1-D :class:`jax.sharding.Mesh` with axis ``"data"`` over the devices
  (all of them by default; after :func:`.distributed.initialize` that is every device of every
  process, and each process runs this same code, see :mod:`.distributed`).
- The batch (every array of :func:`~.trainer.make_batch`'s dict, including Algorithm 12's keys) is
  split along its row axis over ``"data"``: ``batch_size`` must be a multiple of the mesh size.
- θ and the optimiser state are replicated (``param_sharding="replicated"``, default), or sharded
  over the same ``"data"`` axis (``param_sharding="fsdp"``: each array of at least
  ``min_shard_size`` elements is split along its largest axis divisible by the mesh size — the
  ZeRO-3/FSDP layout; XLA all-gathers the weights where the step needs them), or split
  Megatron-style over a second mesh axis ``"model"`` (``param_sharding="megatron"`` on
  :func:`model_mesh`: Algorithm 5's heads, i.e. the rows of W_q, W_k, W_v and their biases, and
  the matching columns of W_o; the MLP's hidden units, i.e. the rows of W_mlp1 and b_mlp1 and
  the columns of W_mlp2; the rest replicated). All give the same numbers.

Typical use::

    mesh = data_mesh()
    theta, history = data_parallel_train(theta, data, key, mesh=mesh, optimizer=make_optimizer(),
                                         N_steps=1000, batch_size=64)

or, one step at a time: ``step = data_parallel_step(mesh, theta, opt_state, optimizer=...)``,
``theta, opt_state = place(mesh, theta, opt_state)``, then
``theta, opt_state, loss, stats = step(theta, opt_state, shard_batch(mesh, batch))``.

This module imports ``optax`` through :mod:`.trainer` (the ``train`` extra).
"""

from __future__ import annotations

import functools
import itertools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..paper.checks import fail
from ..paper.normalisation import EPS
from .fast import train_step_fast
from .trainer import (
    as_examples,
    check_options,
    check_theta,
    default_activation,
    run_steps,
    train_step,
)

DATA = "data"
MODEL = "model"
PARAM_SHARDINGS = ("replicated", "fsdp", "megatron")
# Megatron layout (see megatron_spec): the head axis of Algorithm 5's W_q, b_q, W_k, b_k, W_v, b_v
# and the hidden units of the MLP (rows of W_mlp1, b_mlp1; Algorithm 8's decoder W_mlp3, b_mlp3)
# split over "model"; W_o's columns (the heads' stacked outputs) and W_mlp2's (W_mlp4's) columns
# with them.
_SPLIT_ROWS = frozenset(
    {"W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_mlp1", "b_mlp1"} | {"W_mlp3", "b_mlp3"}
)
_SPLIT_COLUMNS = frozenset({"W_o", "W_mlp2", "W_mlp4"})


def data_mesh(devices=None, axis: str = DATA) -> Mesh:
    """A 1-D mesh over ``devices`` (default: ``jax.devices()``, every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis,))


def batch_sharding(mesh: Mesh, axis: str = DATA) -> NamedSharding:
    """Rows (the leading axis) split over ``axis``; the other axes whole on each device."""
    return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _leaf_spec(shape, n: int, axis: str, min_size: int) -> P:
    """FSDP layout of one array: split its largest axis that ``n`` divides, if it is big enough."""
    if int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    candidates = [i for i in range(len(shape)) if shape[i] % n == 0 and shape[i] >= n]
    if not candidates:
        return P()
    i = max(candidates, key=lambda i: (shape[i], -i))
    return P(*([None] * i + [axis]))


def model_mesh(n_model: int, devices=None) -> Mesh:
    """A 2-D mesh ``("data", "model")`` over ``devices`` (default: all), ``n_model`` devices
    along ``"model"`` (each group holds one copy of θ split Megatron-style)."""
    devices = jax.devices() if devices is None else list(devices)
    if (
        isinstance(n_model, bool)
        or not isinstance(n_model, int)
        or n_model < 1
        or len(devices) % n_model
    ):
        fail("model_mesh", "n_model", f"must divide the {len(devices)} devices, got {n_model!r}")
    return Mesh(np.asarray(devices).reshape(-1, n_model), (DATA, MODEL))


def megatron_spec(path, shape, n_model: int) -> P:
    """The Megatron layout of the leaf at ``path`` (named by its θ field, so Adam's moments,
    which mirror θ, get their parameter's layout): heads / hidden units split over ``"model"``."""
    name = next((k.name for k in reversed(path) if isinstance(k, jax.tree_util.GetAttrKey)), None)
    axis = 0 if name in _SPLIT_ROWS else 1 if name in _SPLIT_COLUMNS else None
    if axis is None or len(shape) <= axis:
        return P()
    if shape[axis] % n_model:
        fail(
            "megatron_spec",
            name,
            f"has size {shape[axis]} along axis {axis}, not a multiple of the "
            f"{n_model} devices of mesh axis {MODEL!r}",
        )
    return P(*([None] * axis + [MODEL]))


def tree_shardings(
    mesh: Mesh,
    tree,
    param_sharding: str = "replicated",
    *,
    axis: str = DATA,
    min_shard_size: int = 2**14,
):
    """The ``NamedSharding`` of every leaf of θ or of an optimiser state.

    ``"fsdp"``: the rule depends on a leaf's shape only, so Adam's moments get the layout of their
    parameter. ``"megatron"`` (a mesh with a ``"model"`` axis, :func:`model_mesh`): see
    :func:`megatron_spec`.
    """
    check_param_sharding("tree_shardings", mesh, param_sharding)
    if param_sharding == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), tree)
    if param_sharding == "megatron":
        n_model = mesh.shape[MODEL]
        return jax.tree_util.tree_map_with_path(
            lambda p, a: NamedSharding(mesh, megatron_spec(p, np.shape(a), n_model)), tree
        )
    n = mesh.shape[axis]
    return jax.tree.map(
        lambda a: NamedSharding(mesh, _leaf_spec(np.shape(a), n, axis, min_shard_size)), tree
    )


def check_param_sharding(where, mesh, param_sharding):
    if param_sharding not in PARAM_SHARDINGS:
        fail(where, "param_sharding", f"must be one of {PARAM_SHARDINGS}, got {param_sharding!r}")
    if param_sharding == "megatron" and MODEL not in mesh.shape:
        fail(where, "mesh", f"needs a {MODEL!r} axis for 'megatron' (model_mesh)")


def _check_divisible(where, mesh, batch_size, axis=DATA, argument="batch_size"):
    n = mesh.shape[axis]
    if batch_size % n:
        what = f"has {batch_size} rows, which" if argument == "batch" else f"= {batch_size}"
        fail(where, argument, f"{what} must be a multiple of the {n} devices of mesh axis {axis!r}")


def shard_batch(mesh: Mesh, batch: dict, axis: str = DATA) -> dict:
    """Put a batch of :func:`~.trainer.make_batch` on the mesh, rows split over ``axis``.

    ``batch`` is the whole (global) batch, the same on every process. Each process copies only the
    rows of its own devices (:func:`process_rows`) to them (``jax.make_array_from_callback``);
    with one process that is every row. So N processes that run the same loop on the same data
    with the same key build the same global array as one process does.
    """
    rows = len(next(iter(batch.values())))
    _check_divisible("shard_batch", mesh, rows, axis, "batch")
    sharding = batch_sharding(mesh, axis)
    return {
        k: jax.make_array_from_callback(np.shape(v), sharding, lambda index, v=v: v[index])
        for k, v in batch.items()
    }


def process_rows(mesh: Mesh, rows: int, axis: str = DATA) -> range:
    """The rows of a ``rows``-row global batch that this process's devices hold on ``mesh``
    (every row with one process; the process's contiguous block with ``jax.distributed``)."""
    _check_divisible("process_rows", mesh, rows, axis, "rows")
    spans = batch_sharding(mesh, axis).addressable_devices_indices_map((rows,)).values()
    starts = sorted({(s[0].start or 0, rows if s[0].stop is None else s[0].stop) for s in spans})
    for (_, stop), (start, _) in itertools.pairwise(starts):
        if stop != start:
            fail("process_rows", "mesh", f"gives this process the rows {starts}, not one block")
    return range(starts[0][0], starts[-1][1])


def place(mesh: Mesh, theta, opt_state, param_sharding: str = "replicated", **kw):
    """θ and the optimiser state on the mesh, replicated or FSDP-sharded (see :func:`tree_shardings`)."""
    theta = jax.device_put(theta, tree_shardings(mesh, theta, param_sharding, **kw))
    opt_state = jax.device_put(opt_state, tree_shardings(mesh, opt_state, param_sharding, **kw))
    return theta, opt_state


def data_parallel_step(
    mesh: Mesh,
    theta,
    opt_state,
    *,
    optimizer,
    reduction: str = "mean",
    activation=None,
    eps=EPS,
    param_sharding: str = "replicated",
    axis: str = DATA,
    min_shard_size: int = 2**14,
    fast: bool = False,
):
    """:func:`~.trainer.train_step` (``fast``: :func:`~.fast.train_step_fast`) compiled for
    ``mesh``: ``step(θ, opt_state, batch, p_mask)``.

    ``theta`` and ``opt_state`` give the shapes (and tree structure) the shardings are built for;
    the returned function is jitted with batch rows split over ``axis``, θ and the optimiser state
    laid out as ``param_sharding``, and the loss and statistics replicated. It compiles once per
    batch shape, like ``train_step``; the same arguments (θ and optimiser state of the same
    structure and shapes) give the same jitted function, so a run trained in segments compiles once.
    """
    activation = default_activation(theta, activation)
    step_kw = dict(optimizer=optimizer, reduction=reduction, activation=activation, eps=eps)
    layout = (param_sharding, axis, min_shard_size)
    return _compiled_step(mesh, _layout(theta), _layout(opt_state), fast, *step_kw.items(), *layout)


def _layout(tree):
    """What a tree's shardings depend on, hashable: its structure and every leaf's shape."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(np.shape(leaf) for leaf in leaves)


@functools.lru_cache(maxsize=16)
def _compiled_step(mesh, theta_layout, opt_layout, fast, *options):
    """The jitted step of :func:`data_parallel_step`; ``options``: the step's keywords as
    ``(name, value)`` pairs, then ``param_sharding, axis, min_shard_size``."""
    *step_kw, param_sharding, axis, min_shard_size = options

    def like(layout):  # a tree of the layout's shapes, for tree_shardings
        treedef, shapes = layout
        return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, np.float32) for s in shapes])

    kw = dict(axis=axis, min_shard_size=min_shard_size)
    theta_sh = tree_shardings(mesh, like(theta_layout), param_sharding, **kw)
    opt_sh = tree_shardings(mesh, like(opt_layout), param_sharding, **kw)
    rep = replicated(mesh)
    step = functools.partial(train_step_fast if fast else train_step, **dict(step_kw))
    return jax.jit(
        step,
        in_shardings=(theta_sh, opt_sh, batch_sharding(mesh, axis), rep),
        out_shardings=(theta_sh, opt_sh, rep, rep),
    )


def data_parallel_train(
    theta,
    data,
    key,
    *,
    mesh: Mesh | None = None,
    optimizer,
    N_epochs: int | None = None,
    N_steps: int | None = None,
    batch_size: int = 32,
    reduction: str = "mean",
    p_mask: float = 0.15,
    shuffle: bool = True,
    activation=None,
    eps=EPS,
    callback=None,
    opt_state=None,
    start_step: int = 0,
    return_opt_state: bool = False,
    param_sharding: str = "replicated",
    min_shard_size: int = 2**14,
    fast: bool = False,
):
    """:func:`~.trainer.train` with every step data-parallel over ``mesh`` (default: all devices).

    Same arguments (resuming, ``fast`` and :class:`~.trainer.NonFiniteError` included), the same loop
    (:func:`~.trainer.run_steps`), so the same batches in the same order with the same keys, and
    the same θ as ``train`` up to floating-point summation order. Returns ``(θ, history)`` or
    ``(θ, history, opt_state)``; θ keeps its sharding (gather with ``jax.device_get`` for a host
    copy). Several processes (after :func:`.distributed.initialize`): every process calls this
    with the same ``data``, ``key`` and options; each feeds only its own devices' rows of every
    batch (:func:`shard_batch`), and the run equals the one-process run on as many devices.
    """
    algorithm = check_theta(theta, "data_parallel_train")
    p_mask = check_options(
        algorithm, optimizer, N_epochs, N_steps, batch_size, reduction, key, p_mask
    )
    mesh = data_mesh() if mesh is None else mesh
    _check_divisible(algorithm, mesh, batch_size)
    check_param_sharding(algorithm, mesh, param_sharding)
    activation = default_activation(theta, activation)
    examples = as_examples(algorithm, data, theta)
    opt_state = optimizer.init(theta) if opt_state is None else opt_state
    kw = dict(optimizer=optimizer, reduction=reduction, activation=activation, eps=eps)
    shards = dict(param_sharding=param_sharding, min_shard_size=min_shard_size)
    step = data_parallel_step(mesh, theta, opt_state, **kw, **shards, fast=fast)
    theta, opt_state = place(mesh, theta, opt_state, param_sharding, min_shard_size=min_shard_size)
    loop = dict(N_epochs=N_epochs, N_steps=N_steps, batch_size=batch_size, shuffle=shuffle)
    loop.update(callback=callback, start_step=start_step)
    loop.update(place_batch=functools.partial(shard_batch, mesh))
    run = (algorithm, step, theta, opt_state, examples, key, p_mask)
    theta, opt_state, history = run_steps(*run, **loop)
    return (theta, history, opt_state) if return_opt_state else (theta, history)
