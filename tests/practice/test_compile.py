"""Compile hygiene (issue 9): the minibatch trainer and the data-parallel step trace once per shape
bucket, whatever the sequence lengths inside the bucket, the batch's composition, the epoch, the key.

Already pinned elsewhere (not repeated here):
- the literal training loops of Algorithms 11-13 and ``trainer.train`` on one fixed data set:
  tests/test_training.py (``test_*_compile_once_per_bucket``, ``test_trainer_is_deterministic_*``);
- cached generation (Algorithms 14, 15: new prompt lengths in a bucket, ℓ_gen, τ, keys,
  max_length, batches): tests/test_cache.py::test_compile_once_per_bucket.

What this module adds: ``trainer.train_step`` and ``fast.train_step_fast`` for all three
architectures over many sequence lengths within one bucket (and one new trace per new bucket),
``trainer.evaluate``, and ``parallel.data_parallel_train``. A trace is counted by an activation
that records its calls: Python code inside a jitted function runs only while JAX traces it, so a
new call means a new trace. The activation is numerically the paper's (GELU, ReLU) and a module-level object, so it
is one static argument value throughout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import formal_algorithms as fa
from formal_algorithms.practice import parallel, trainer

TRACES = []


def counting_gelu(x):
    TRACES.append("gelu")
    return fa.gelu(x)


def counting_relu(x):
    TRACES.append("relu")
    return fa.relu(x)


HP = dict(N_V=11, ell_max=16, H=2, d_e=4, d_mlp=8)
OPT = optax.adamw(1e-2)  # one optimiser object: it is a static argument of train_step


def seqs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, HP["N_V"] - 3, n) for n in lengths]


def traces_of(fn):
    """The number of traces ``fn()`` causes (0 if everything it calls is compiled already)."""
    before = len(TRACES)
    fn()
    return len(TRACES) - before


def test_d_train_step_traces_once_per_bucket():
    theta = fa.init_d_transformer(jax.random.key(0), **HP, L=1, dtype=jnp.float64)

    def run(lengths, seed, N_epochs=2):
        trainer.train(
            theta,
            seqs(lengths, seed),
            jax.random.key(seed),
            optimizer=OPT,
            N_epochs=N_epochs,
            batch_size=2,
            activation=counting_gelu,
        )

    assert traces_of(lambda: run([5, 8, 6], 0)) >= 1  # bucket 8 compiled (and the last short batch)
    # Every length 5..8 is bucket 8: other data, other keys, other epochs, a short last batch.
    assert traces_of(lambda: run([7, 5, 8, 6, 7], 1, N_epochs=3)) == 0
    assert traces_of(lambda: run([6], 2)) == 0
    # Bucket 16 (lengths 9..16) is new: traced once, then never again.
    assert traces_of(lambda: run([9, 16, 12], 3)) >= 1
    assert traces_of(lambda: run([10, 11, 13, 15, 9], 4)) == 0


def test_e_and_ed_train_step_trace_once_per_bucket():
    theta_e = fa.init_e_transformer(jax.random.key(1), **HP, L=1, dtype=jnp.float64)

    def run_e(lengths, seed):
        trainer.train(
            theta_e,
            seqs(lengths, seed),
            jax.random.key(seed),
            optimizer=OPT,
            N_epochs=2,
            batch_size=2,
            p_mask=0.3,
            activation=counting_gelu,
        )

    assert traces_of(lambda: run_e([5, 8, 6], 0)) >= 1
    assert traces_of(lambda: run_e([7, 6, 5, 8], 1)) == 0  # new masks are data, not shapes

    theta_ed = fa.init_ed_transformer(jax.random.key(2), **HP, L_enc=1, L_dec=1)
    theta_ed = jax.tree.map(lambda a: a.astype(jnp.float64), theta_ed)

    def run_ed(z_lengths, x_lengths, seed):
        data = list(zip(seqs(z_lengths, seed), seqs(x_lengths, seed + 100), strict=True))
        trainer.train(
            theta_ed,
            data,
            jax.random.key(seed),
            optimizer=OPT,
            N_epochs=2,
            batch_size=2,
            activation=counting_relu,
        )

    # z lengths 3, 4 are bucket 4; x lengths 5..8 bucket 8 (a new bucket: see the D test above)
    assert traces_of(lambda: run_ed([3, 4], [5, 8], 0)) >= 1
    assert traces_of(lambda: run_ed([4, 3, 3, 4], [6, 7, 5, 8], 1)) == 0


def test_fast_train_steps_trace_once_per_bucket():
    """``train(fast=True)`` (what the command line runs) for Algorithms 10, 9 and 8."""
    thetas = [
        fa.init_d_transformer(jax.random.key(3), **HP, L=1, dtype=jnp.float64),
        fa.init_e_transformer(jax.random.key(4), **HP, L=1, dtype=jnp.float64),
        fa.init_ed_transformer(jax.random.key(5), **HP, L_enc=1, L_dec=1, dtype=jnp.float64),
    ]
    activations = [counting_gelu, counting_gelu, counting_relu]
    for theta, activation in zip(thetas, activations, strict=True):

        def run(lengths, seed, theta=theta, activation=activation):
            data = seqs(lengths, seed)
            if isinstance(theta, fa.EDTransformerParams):
                data = list(zip(data, seqs(lengths[::-1], seed + 100), strict=True))
            trainer.train(
                theta,
                data,
                jax.random.key(seed),
                optimizer=OPT,
                N_epochs=2,
                batch_size=2,
                p_mask=0.3,
                activation=activation,
                fast=True,
            )

        assert traces_of(lambda: run([5, 8, 6], 0)) >= 1, type(theta).__name__
        assert traces_of(lambda: run([7, 6, 5, 8, 7], 1)) == 0, type(theta).__name__


def test_evaluate_traces_once_per_bucket():
    theta = fa.init_d_transformer(jax.random.key(3), **HP, L=1, dtype=jnp.float64)

    def run(lengths, seed):
        trainer.evaluate(theta, seqs(lengths, seed), batch_size=4, activation=counting_gelu)

    assert traces_of(lambda: run([5, 8, 6], 0)) >= 1
    assert traces_of(lambda: run([7, 5, 8, 6, 7, 6, 5], 1)) == 0


def test_data_parallel_step_traces_once_per_bucket():
    """The sharded step (one-device mesh here; tests/test_parallel.py runs 4 devices) is compiled
    once per data_parallel_train call and bucket: its batches never retrace within a run."""
    theta = fa.init_d_transformer(jax.random.key(4), **HP, L=1, dtype=jnp.float64)
    counts = []

    def callback(step, loss, stats):
        counts.append(len(TRACES))

    parallel.data_parallel_train(
        theta,
        seqs([5, 8, 6, 7, 5, 6, 8, 7], 0),
        jax.random.key(0),
        optimizer=OPT,
        N_epochs=3,
        batch_size=2,
        activation=counting_gelu,
        callback=callback,
    )
    assert len(counts) == 12
    assert counts[1:] == counts[:1] * 11  # traced before the first step's callback, never again
