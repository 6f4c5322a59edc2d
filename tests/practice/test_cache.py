"""Key/value-cache forms of Algorithms 14 and 15 (formal_algorithms.practice.cache).

- the incremental forward equals the full forward (Algorithm 10, Algorithm 8) column by column,
  to 1e-12 in float64, for a prefill, a chunked prefill and one column at a time (bug classes 3, 9);
- the cached generations return the same tokens as the literal algorithms for the same key, over
  many keys and temperatures including 0 and ∞ (bug class 9);
- a batch of prompts of different lengths (right-padded) gives the same tokens as one prompt at a
  time, whatever the padding (bug classes 4, 8, 14);
- one trace per length bucket: new ℓ_gen, τ, keys, max_length or prompt lengths within the bucket
  do not retrace (bug class 14).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from params import perturbed

import formal_algorithms as fa
from formal_algorithms.paper.inference import d_inference, ed_inference, special_tokens
from formal_algorithms.practice import cache
from formal_algorithms.practice.cache import (
    d_cached_logits,
    d_inference_cached,
    d_inference_cached_batch,
    ed_cached_logits,
    ed_cross_cache,
    ed_inference_cached,
    ed_inference_cached_batch,
    init_kv_cache,
    length_bucket,
)

# The same shapes as test_inference.py, so that the literal forms' executables are shared.
D_HP = dict(N_V=8, ell_max=12, L=2, H=2, d_e=16, d_mlp=32)
ED_HP = dict(N_V=10, ell_max=6, L_enc=1, L_dec=2, H=2, d_e=16, d_mlp=32)
EOS = special_tokens(ED_HP["N_V"])["eos_token"]
TAUS = [0, 0.5, 1.0, 3.0, math.inf]
rng = np.random.default_rng(0)


def d_model(seed=0):
    """Random Algorithm 10 weights with peaked next-token distributions and strong positions;
    non-zero biases, γ ≠ 1, β ≠ 0 (a bias sign slip in one path must show)."""
    theta = perturbed(fa.init_d_transformer(jax.random.key(seed), **D_HP, dtype=jnp.float64), seed)
    return theta._replace(W_e=40 * theta.W_e, W_p=40 * theta.W_p, W_u=3 * theta.W_u)


def ed_model(seed=0):
    """Random Algorithm 8 weights, biases, γ and β; eos made likely enough that sequences stop
    at varied lengths."""
    theta = perturbed(
        fa.init_ed_transformer(jax.random.key(seed), **ED_HP, dtype=jnp.float64), seed
    )
    last = theta.dec[-1]
    beta5 = last.beta5.at[0].set(1.0)
    W_u = (3 * theta.W_u).at[EOS, 0].set(1.5)
    return theta._replace(
        W_e=40 * theta.W_e,
        W_p=40 * theta.W_p,
        dec=(*theta.dec[:-1], last._replace(beta5=beta5)),
        W_u=W_u,
    )


_d_logits = jax.jit(d_cached_logits)
_ed_logits = jax.jit(ed_cached_logits)


def test_length_bucket():
    assert [length_bucket(n, 12) for n in (1, 8, 9, 12)] == [8, 8, 12, 12]
    assert [length_bucket(n, 256) for n in (1, 9, 16, 17, 200)] == [8, 16, 16, 32, 256]


def test_d_cached_logits_equal_the_full_forward():
    theta = d_model()
    ell_max = D_HP["ell_max"]
    x = jnp.asarray(rng.integers(0, D_HP["N_V"], ell_max))
    full = np.asarray(fa.d_transformer_logits(x, theta))
    # Prefill 5 columns, a chunk of 5 at start 5 (queries not at the top-left), then one at a time.
    logits, c = _d_logits(x[:5], 0, theta, init_kv_cache(theta))
    columns = [logits]
    logits, c = _d_logits(x[5:10], 5, theta, c)
    columns.append(logits)
    for t in range(10, ell_max):
        logits, c = _d_logits(x[t : t + 1], t, theta, c)
        columns.append(logits)
    np.testing.assert_allclose(np.concatenate(columns, axis=1), full, rtol=0, atol=1e-12)
    # Every column from an empty cache, one token at a time (the decoding path alone).
    c, columns = init_kv_cache(theta), []
    for t in range(ell_max):
        logits, c = _d_logits(x[t : t + 1], t, theta, c)
        columns.append(logits)
    np.testing.assert_allclose(np.concatenate(columns, axis=1), full, rtol=0, atol=1e-12)
    # The same token at another position gives other logits: positions are really used.
    other, _ = _d_logits(x[ell_max - 1 :], ell_max - 2, theta, c)
    assert np.abs(np.asarray(other)[:, 0] - full[:, -1]).max() > 1e-3


def test_ed_cached_logits_equal_the_full_forward():
    theta = ed_model()
    ell_max = ED_HP["ell_max"]
    z = jnp.asarray(rng.integers(0, ED_HP["N_V"], 4))
    x = jnp.asarray(rng.integers(0, ED_HP["N_V"], ell_max))
    full = np.asarray(fa.ed_transformer_logits(z, x, theta))
    cross = ed_cross_cache(fa.ed_encode(z, theta), theta)
    logits, c = _ed_logits(x[:3], 0, theta, init_kv_cache(theta), cross)
    columns = [logits]
    for t in range(3, ell_max):
        logits, c = _ed_logits(x[t : t + 1], t, theta, c, cross)
        columns.append(logits)
    np.testing.assert_allclose(np.concatenate(columns, axis=1), full, rtol=0, atol=1e-12)


def test_d_cached_generation_equals_literal():
    theta = d_model()
    for prompt in ([2, 0, 5], [1, 4, 2, 7, 7, 0, 3]):
        prompt = jnp.asarray(prompt, jnp.int32)
        for tau in TAUS:
            outputs = set()
            for seed in range(10):
                key = jax.random.key(seed)
                literal = np.asarray(d_inference(prompt, theta, key, ell_gen=6, tau=tau))
                cached = d_inference_cached(prompt, theta, key, ell_gen=6, tau=tau)
                assert cached.dtype == prompt.dtype
                np.testing.assert_array_equal(
                    np.asarray(cached), literal, err_msg=f"tau={tau} seed={seed}"
                )
                outputs.add(tuple(literal))
            assert len(outputs) == 1 if tau == 0 else len(outputs) > 1  # the keys matter


def test_ed_cached_generation_equals_literal():
    theta = ed_model()
    lengths = []
    for z in ([1, 2, 3, 4], [5, 0, 8, 9]):  # one length (4, as in test_inference): fewer compiles
        z = jnp.asarray(z, jnp.int32)
        for tau in [0, 1.0, 2.5, math.inf]:
            for seed in range(8):
                key = jax.random.key(seed)
                literal = np.asarray(ed_inference(z, theta, key, tau=tau))
                cached = ed_inference_cached(z, theta, key, tau=tau)
                np.testing.assert_array_equal(
                    np.asarray(cached), literal, err_msg=f"tau={tau} seed={seed}"
                )
                lengths.append((len(literal), literal[-1] == EOS))
        short = np.asarray(ed_inference(z, theta, jax.random.key(0), tau=1.0, max_length=3))
        np.testing.assert_array_equal(
            ed_inference_cached(z, theta, jax.random.key(0), tau=1.0, max_length=3), short
        )
    # Both exits (eos, guard) and several lengths occurred, so the stopping rule was exercised.
    assert any(stop for _, stop in lengths) and not all(stop for _, stop in lengths)
    assert len({n for n, _ in lengths}) >= 3


def test_d_batch_of_different_lengths_equals_one_at_a_time():
    theta = d_model(1)
    prompts = [jnp.asarray(rng.integers(0, D_HP["N_V"], n), jnp.int32) for n in (1, 6, 3, 9)]
    keys = jax.random.split(jax.random.key(5), len(prompts))
    for tau in [1.0, 0]:
        batch = np.asarray(d_inference_cached_batch(prompts, theta, keys, ell_gen=4, tau=tau))
        assert batch.shape == (4, 4)
        for b, prompt in enumerate(prompts):  # cached single == literal: tested above
            single = d_inference_cached(prompt, theta, keys[b], ell_gen=4, tau=tau)
            np.testing.assert_array_equal(batch[b], np.asarray(single))
    literal = d_inference(prompts[2], theta, keys[2], ell_gen=4, tau=tau)
    np.testing.assert_array_equal(batch[2], np.asarray(literal))
    # Singles of length ≤ 8 ran in bucket 8, the batch in bucket 12: the amount of padding does
    # not change the tokens.


def test_ed_batch_of_different_lengths_equals_one_at_a_time():
    theta = ed_model(1)
    contexts = [jnp.asarray(rng.integers(0, ED_HP["N_V"], n), jnp.int32) for n in (4, 1, 6, 2)]
    keys = jax.random.split(jax.random.key(9), len(contexts))
    for tau in [1.0, 0]:
        batch = ed_inference_cached_batch(contexts, theta, keys, tau=tau)
        for b, z in enumerate(contexts):  # cached single == literal: tested above
            single = ed_inference_cached(z, theta, keys[b], tau=tau)
            np.testing.assert_array_equal(np.asarray(batch[b]), np.asarray(single))
    literal = ed_inference(contexts[0], theta, keys[0], tau=tau)
    np.testing.assert_array_equal(np.asarray(batch[0]), np.asarray(literal))


def test_compile_once_per_bucket():
    """After the first call in a bucket (at most one trace), new prompt lengths in the bucket, new
    ℓ_gen, τ (0, finite, ∞), keys and max_length reuse the executable: no further trace."""
    theta = d_model(2)
    counts = cache.compiled_count
    before = counts("d_generate")
    d_inference_cached(jnp.arange(4), theta, jax.random.key(0), ell_gen=2)
    assert counts("d_generate") - before <= 1
    before = counts("d_generate")
    for ell, ell_gen, tau, seed in [
        (3, 2, 1.0, 0),
        (5, 7, 0, 1),
        (8, 1, math.inf, 2),
        (1, 12, 0.3, 3),
    ]:
        d_inference_cached(
            np.arange(ell) % 5, theta, jax.random.key(seed), ell_gen=ell_gen, tau=tau
        )
    keys = jax.random.split(jax.random.key(0), 4)
    d_inference_cached_batch([np.arange(n) % 5 for n in (1, 6, 3, 9)], theta, keys, ell_gen=3)
    before_batch = counts("d_generate")
    d_inference_cached_batch(
        [np.arange(n) % 5 for n in (12, 2, 5, 10)], theta, keys, ell_gen=1, tau=0
    )
    assert counts("d_generate") == before_batch  # same batch size and bucket: no trace
    assert counts("d_generate") - before <= 1  # at most the batch function's first trace

    theta = ed_model(2)
    ed_inference_cached(jnp.arange(3), theta, jax.random.key(0))
    before = counts("ed_generate")
    for ell_z, max_length, tau in [(2, 3, 1.0), (5, None, 0), (6, 7, math.inf), (1, 2, 0.5)]:
        ed_inference_cached(
            np.arange(ell_z) % 5, theta, jax.random.key(ell_z), tau=tau, max_length=max_length
        )
    assert counts("ed_generate") == before


def test_cached_bad_arguments():
    theta = d_model()
    k = jax.random.key(0)
    alg = r"DInference \(Algorithm 14\)"
    with pytest.raises(ValueError, match=alg + ".*'ell_gen'.*no sliding window"):
        d_inference_cached(np.arange(10) % 5, theta, k, ell_gen=4)
    with pytest.raises(ValueError, match=alg + ".*'tau'"):
        d_inference_cached(jnp.arange(3), theta, k, ell_gen=1, tau=-2)
    with pytest.raises(TypeError, match=alg + ".*'key'"):
        d_inference_cached(jnp.arange(3), theta, 7, ell_gen=1)
    with pytest.raises(TypeError, match=alg + ".*'keys'.*split"):
        d_inference_cached_batch([jnp.arange(3), jnp.arange(2)], theta, k, ell_gen=1)
    with pytest.raises(ValueError, match=alg + ".*'prompts\\[1\\]' holds token ids"):
        d_inference_cached_batch(
            [jnp.arange(3), jnp.asarray([9])], theta, jax.random.split(k, 2), ell_gen=1
        )
    with pytest.raises(ValueError, match=alg + ".*'prompts' is empty"):
        d_inference_cached_batch([], theta, jax.random.split(k, 0), ell_gen=1)
    assert d_inference_cached(jnp.arange(3), theta, k, ell_gen=0).shape == (0,)
    with pytest.raises(ValueError, match="'start' = 11 with 2 tokens"):
        d_cached_logits(jnp.arange(2), 11, theta, init_kv_cache(theta))
    with pytest.raises(ValueError, match="'cache' has shapes"):
        d_cached_logits(jnp.arange(2), 0, theta, init_kv_cache(ed_model()))
    ed = ed_model()
    with pytest.raises(ValueError, match=r"EDInference \(Algorithm 15\).*'max_length'"):
        ed_inference_cached(jnp.arange(3), ed, k, max_length=ED_HP["ell_max"] + 2)
    with pytest.raises(TypeError, match=r"EDInference \(Algorithm 15\).*'theta'"):
        ed_inference_cached(jnp.arange(3), theta, k)
