"""The trace of a layer stack run in one call (the placement forms, a Post-LN decoder).

Two ways this went wrong: a statement tagged with the whole layer loop (``# lines 4-9``) was taken
for a loop vectorised over l, so X's d_e rows were recorded as "line 9, l = 1 … d_e"; and the
Post-LN layer run by a decoder was recorded under Algorithm 10, whose lines 5-8 print a Pre-LN layer
(its line 5 says ``X̃ ← layer_norm(X)`` over a value that is a residual sum). Each record here is
checked against the paper's table and against numpy's layer norm of the value before it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from formal_algorithms import trace
from formal_algorithms.paper.pseudocode import PSEUDOCODE
from formal_algorithms.variants import placement

KEY = jax.random.PRNGKey(3)
L = 3
HP = dict(N_V=11, ell_max=8, L=L, H=2, d_e=6, d_mlp=10)  # d_e ≠ L: a split X shows
x = jnp.asarray([1, 2, 3, 4, 5])
z = jnp.asarray([4, 5])


def _forms():
    import formal_algorithms as fa

    e = fa.init_e_transformer(KEY, **HP, dtype=jnp.float64)
    return {
        "post-LN Algorithm 10": (
            placement.post_ln_d_transformer_logits,
            (x, placement.init_post_ln_d_transformer(KEY, **HP, dtype=jnp.float64)),
        ),
        "pre-LN Algorithm 10": (
            placement.pre_ln_d_transformer_logits,
            (x, fa.init_d_transformer(KEY, **HP, dtype=jnp.float64)),
        ),
        "post-LN Algorithm 9": (placement.post_ln_e_transformer_logits, (x, e)),
        "pre-LN Algorithm 9": (
            placement.pre_ln_e_transformer_logits,
            (x, placement.init_pre_ln_e_transformer(KEY, **HP, dtype=jnp.float64)),
        ),
    }


FORMS = _forms()


@pytest.mark.parametrize("name", list(FORMS))
def test_a_stack_run_in_one_call_records_each_layer_once(name):
    fn, args = FORMS[name]
    records = trace(fn, *args).records
    layers = {r.indices["l"] for r in records if "l" in r.indices}
    assert layers == set(range(1, L + 1)), name  # never 1 … d_e
    loop = [r for r in records if r.line == 4 and r.name == "l"]
    assert [r.value for r in loop] == list(range(1, L + 1))
    for r in records:  # every record's text is its own algorithm's line, as the paper prints it
        if isinstance(r.algorithm, int) and len(r.lines) == 1:
            assert r.pseudocode == PSEUDOCODE[r.algorithm][r.line], r.path


def _layer_norm(X, eps=1e-5):
    X = np.asarray(X, np.float64)
    m = X.mean(axis=0, keepdims=True)
    v = ((X - m) ** 2).mean(axis=0, keepdims=True)
    return (X - m) / np.sqrt(v + eps)


def test_a_post_ln_decoder_records_the_post_ln_layer_as_algorithm_9_prints_it():
    theta = placement.init_post_ln_d_transformer(KEY, **HP, dtype=jnp.float64)
    assert all(np.all(np.asarray(layer.gamma1) == 1) for layer in theta.layers)  # γ = 1, β = 0
    records = trace(placement.post_ln_d_transformer_logits, x, theta).records
    inner = [r for r in records if r.algorithm == 9]
    assert sorted({r.line for r in inner}) == [5, 6, 7, 8]
    assert not [r for r in records if r.algorithm == 10 and r.lines in ((5,), (6,), (7,))]
    for l in range(1, L + 1):
        at = {r.line: np.asarray(r.value) for r in inner if r.indices == {"l": l}}
        assert sorted(at) == [5, 6, 7, 8]
        # line 6 normalises line 5's residual sum, line 8 line 7's (numpy, γ = 1, β = 0)
        np.testing.assert_allclose(at[6], _layer_norm(at[5]), atol=1e-12)
        np.testing.assert_allclose(at[8], _layer_norm(at[7]), atol=1e-12)
        assert not np.allclose(at[5], _layer_norm(at[5]), atol=1e-3)  # a sum, not a norm
        path = next(r.path for r in inner if r.indices == {"l": l} and r.line == 5)
        assert path == f"Algorithm 10 › lines 5-8 (l={l}) › Algorithm 9 › line 5"
