"""Bad inputs the fourth held-back catalogue found silent or unclear (issue 29), each now refused
naming the function and the argument. The catalogue itself, and its score before these fixes,
are in algorithms.md's "Errors"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import formal_algorithms as fa
from formal_algorithms.families.gpt_neox import gpt_neox_decoder, init_gpt_neox


def _decoder():
    return gpt_neox_decoder(init_gpt_neox(jax.random.key(0), N_V=9, L=1, H=2, d_e=8, d_mlp=12))


def _trace():
    theta = fa.init_d_transformer(jax.random.key(1), N_V=9, ell_max=8, L=1, H=2, d_e=8, d_mlp=12)
    return fa.trace(fa.d_transformer, jnp.asarray([1, 2, 3]), theta)


CASES = {
    # a negative base gave NaN angles with a RuntimeWarning (RoPE refused the same base)
    "sinusoid-base": (
        lambda: fa.vaswani_sinusoidal_W_p(8, 8, base=-1.0),
        ValueError,
        r"^vaswani_sinusoidal_W_p: argument 'base' = -1.0 must be a finite number > 0",
    ),
    # Trace.get refused algorithm='ten'; table and find answered with an empty table
    "trace-table-algorithm": (
        lambda: _trace().table(algorithm="ten"),
        ValueError,
        r"^Trace.table: argument 'algorithm' = 'ten' must be 1-15 or an equation",
    ),
    # τ > 0 without a key sampled with a hidden seed 0
    "generate-without-key": (
        lambda: _decoder().generate([1, 2], max_new=2, tau=0.7),
        ValueError,
        r"argument 'key' is None, but τ = 0.7 samples",
    ),
    # a 0-d score raised numpy's "axis 0 is out of bounds"
    "softmax-scalar": (
        lambda: fa.softmax(jnp.float32(1.0)),
        TypeError,
        r"^softmax \(eq. 2\): argument 'A' must be a float vector or matrix, got float32 of shape \(\)",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_fourth_catalogues_cases_are_refused_by_name(name):
    call, error, message = CASES[name]
    with pytest.raises(error, match=message):
        call()


def test_greedy_decoding_still_needs_no_key():
    tokens = _decoder().generate([1, 2], max_new=2)
    assert len(tokens) == 2 and all(0 <= y < 9 for y in tokens)
