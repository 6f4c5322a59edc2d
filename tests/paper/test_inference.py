"""Algorithms 14 (DInference) and 15 (EDInference), literal forms.

Expectations come from the independent numpy transcription (paper_numpy) or from the documented
key schedule applied by hand: token i is drawn with fold_in(key, i) from q ∝ p^{1/τ}.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from paper_numpy import d_transformer as np_d_transformer
from paper_numpy import ed_transformer as np_ed_transformer

import formal_algorithms as fa
from formal_algorithms.paper.inference import (
    d_inference,
    ed_inference,
    sample_token,
    special_tokens,
)

# Shapes shared with test_cache.py, so that the literal forms' per-length executables are reused.
D_HP = dict(N_V=8, ell_max=12, L=2, H=2, d_e=16, d_mlp=32)
ED_HP = dict(N_V=10, ell_max=6, L_enc=1, L_dec=2, H=2, d_e=16, d_mlp=32)
N_DRAWS = 20_000


def peaked_d_model(seed=0):
    """A random Algorithm 10 model whose next-token distributions are far from uniform
    (embeddings and W_u scaled up), so that frequency tests can tell temperatures apart."""
    theta = fa.init_d_transformer(jax.random.key(seed), **D_HP, dtype=jnp.float64)
    return theta._replace(W_e=40 * theta.W_e, W_p=40 * theta.W_p, W_u=3 * theta.W_u)


def constant_ed_model(logits, seed=0):
    """An Algorithm 8 model whose every output column is softmax(logits): the last layer norm has
    γ⁵ = 0 and β⁵ = c, so X = c 1ᵀ and W_u X = (W_u c) 1ᵀ; W_u is chosen to give ``logits``."""
    theta = fa.init_ed_transformer(jax.random.key(seed), **ED_HP, dtype=jnp.float64)
    d_e, N_V = ED_HP["d_e"], ED_HP["N_V"]
    c = np.zeros(d_e)
    c[0] = 1.0
    W_u = np.random.default_rng(seed).normal(size=(N_V, d_e))
    W_u[:, 0] = logits
    last = theta.dec[-1]._replace(gamma5=jnp.zeros(d_e), beta5=jnp.asarray(c))
    return theta._replace(dec=(*theta.dec[:-1], last), W_u=jnp.asarray(W_u))


def chi_square_rejects(samples, probs):
    """Pearson's test of ``samples`` against ``probs`` at level 1e-6; tokens whose expected count
    is below 5 are pooled into one bin so that the chi-square approximation holds."""
    counts = np.bincount(np.asarray(samples), minlength=len(probs))
    expected = len(samples) * np.asarray(probs)
    small = expected < 5
    counts = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if expected[-1] == 0:  # nothing to pool
        counts, expected = counts[:-1], expected[:-1]
    statistic = (((counts - expected) ** 2) / np.maximum(expected, 1e-300)).sum()
    return statistic > scipy.stats.chi2.ppf(1 - 1e-6, len(expected) - 1)


PROMPT = jnp.asarray([1, 4, 2], jnp.int32)


def one_step_draws(theta, tau):
    keys = jax.random.split(jax.random.key(123), N_DRAWS)
    draws = jax.vmap(lambda k: d_inference(PROMPT, theta, k, ell_gen=1, tau=tau))(keys)
    return np.asarray(draws)[:, 0]


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_alg14_samples_follow_q(tau):
    """Line 5: the sampled token is distributed as q ∝ p^{1/τ} (chi-square, 20000 draws)."""
    theta = peaked_d_model()
    p = np_d_transformer(np.asarray(PROMPT), theta)[:, -1]  # line 4, independent numpy
    assert p.max() > 0.3 and p.min() < 0.02  # far from uniform: the test has power
    q = p ** (1 / tau) / (p ** (1 / tau)).sum()
    draws = one_step_draws(theta, tau)
    assert not chi_square_rejects(draws, q)
    # Power: the same draws reject p^{1/(2τ)} (a wrong temperature), and for τ ≠ 1 also p itself.
    wrong = p ** (1 / (2 * tau)) / (p ** (1 / (2 * tau))).sum()
    assert chi_square_rejects(draws, wrong)
    if tau != 1.0:
        assert chi_square_rejects(draws, p)


def test_tau_inf_is_uniform_and_tau_0_is_argmax():
    theta = peaked_d_model()
    draws = one_step_draws(theta, math.inf)
    N_V = D_HP["N_V"]
    assert not chi_square_rejects(draws, np.full(N_V, 1 / N_V))
    assert chi_square_rejects(draws, np_d_transformer(np.asarray(PROMPT), theta)[:, -1])
    # τ = 0: the argmax of p at every step, whatever the key (numpy reference, greedy loop).
    x = list(np.asarray(PROMPT))
    for _ in range(6):
        x.append(int(np.argmax(np_d_transformer(np.asarray(x), theta)[:, -1])))
    for seed in range(3):
        y = d_inference(PROMPT, theta, jax.random.key(seed), ell_gen=6, tau=0)
        np.testing.assert_array_equal(np.asarray(y), x[3:])


def test_tiny_tau_does_not_underflow():
    """p^{1/τ} underflows to 0/0 for small τ; the log-space sampler picks the argmax instead."""
    theta = peaked_d_model()
    p = np_d_transformer(np.asarray(PROMPT), theta)[:, -1]
    with np.errstate(under="ignore"):
        assert (p ** (1 / 1e-4)).sum() == 0.0  # the naive formula would divide 0 by 0
    for tau in [1e-4, 1e-300, 5e-324]:
        for seed in range(5):
            y = d_inference(PROMPT, theta, jax.random.key(seed), ell_gen=1, tau=tau)
            assert int(y[0]) == int(np.argmax(p))
    # Directly on extreme logits: finite, no NaN, the maximum wins for tiny τ, both ends sampled
    # at moderate τ.
    sample = jax.jit(jax.vmap(sample_token, in_axes=(0, None, None)))
    keys = jax.random.split(jax.random.key(0), 64)
    logits = jnp.asarray([-1e300, 1e300, 1e300 * (1 - 1e-15), 0.0])
    for tau in [1e-6, 1e-300]:
        np.testing.assert_array_equal(np.asarray(sample(keys, logits, tau)), 1)
    near_tie = jnp.asarray([0.0, 1e-3, -50.0, -60.0])
    assert set(np.asarray(sample(keys, near_tie, 1.0)).tolist()) == {0, 1}


def test_key_schedule_step_i_uses_fold_in():
    """Token i is categorical(fold_in(key, i), log p / τ): computed by hand from numpy P."""
    theta = peaked_d_model()
    key, tau = jax.random.key(7), 0.8
    y = np.asarray(d_inference(PROMPT, theta, key, ell_gen=5, tau=tau))
    x = list(np.asarray(PROMPT))
    for i in range(5):
        log_p = np.log(np_d_transformer(np.asarray(x), theta)[:, -1])
        x.append(int(jax.random.categorical(jax.random.fold_in(key, i), jnp.asarray(log_p / tau))))
    np.testing.assert_array_equal(y, x[3:])
    # A shorter run is a prefix of a longer one with the same key; another key differs.
    np.testing.assert_array_equal(
        np.asarray(d_inference(PROMPT, theta, key, ell_gen=2, tau=tau)), y[:2]
    )
    others = [
        np.asarray(d_inference(PROMPT, theta, jax.random.key(s), ell_gen=5, tau=tau))
        for s in range(8, 12)
    ]
    assert any((o != y).any() for o in others)


def test_length_guard_and_window():
    theta = peaked_d_model()
    ell_max = D_HP["ell_max"]
    x = jnp.asarray(np.arange(ell_max - 2) % 5)
    # ℓ + ℓ_gen − 1 = ℓ_max is the longest allowed run (the last token is never fed back).
    assert d_inference(x, theta, jax.random.key(0), ell_gen=3, tau=0).shape == (3,)
    with pytest.raises(
        ValueError, match=r"DInference \(Algorithm 14\): argument 'ell_gen'.*ell_max = 12"
    ):
        d_inference(x, theta, jax.random.key(0), ell_gen=4)
    # window=True: every step sees the last ℓ_max tokens (numpy reference, greedy).
    y = d_inference(x, theta, jax.random.key(0), ell_gen=6, tau=0, window=True)
    seq = list(np.asarray(x))
    for _ in range(6):
        seq.append(int(np.argmax(np_d_transformer(np.asarray(seq[-ell_max:]), theta)[:, -1])))
    np.testing.assert_array_equal(np.asarray(y), seq[ell_max - 2 :])
    long_prompt = jnp.asarray(np.arange(ell_max + 2) % 5)  # longer than ℓ_max: only with the window
    assert d_inference(long_prompt, theta, jax.random.key(0), ell_gen=2, window=True).shape == (2,)
    with pytest.raises(ValueError, match="ell_max"):
        d_inference(long_prompt, theta, jax.random.key(0), ell_gen=1)


def test_alg14_bad_arguments():
    theta = peaked_d_model()
    k = jax.random.key(0)
    alg = r"DInference \(Algorithm 14\)"
    for tau in [-1.0, float("nan"), -math.inf]:
        with pytest.raises(ValueError, match=alg + ".*'tau'"):
            d_inference(PROMPT, theta, k, ell_gen=1, tau=tau)
    for tau in ["1", [1.0], 1j, True]:
        with pytest.raises(TypeError, match=alg + ".*'tau'"):
            d_inference(PROMPT, theta, k, ell_gen=1, tau=tau)
    with pytest.raises(ValueError, match=alg + ".*'ell_gen' = -1"):
        d_inference(PROMPT, theta, k, ell_gen=-1)
    for bad in [1.5, True, "3"]:
        with pytest.raises(TypeError, match=alg + ".*'ell_gen'"):
            d_inference(PROMPT, theta, k, ell_gen=bad)
    with pytest.raises(ValueError, match=alg + ".*'x' is empty"):
        d_inference(jnp.zeros(0, jnp.int32), theta, k, ell_gen=1)
    with pytest.raises(ValueError, match=alg + ".*'x' holds token ids"):
        d_inference(jnp.asarray([1, 8]), theta, k, ell_gen=1)
    with pytest.raises(TypeError, match=alg + ".*'key'"):
        d_inference(PROMPT, theta, 0, ell_gen=1)
    with pytest.raises(TypeError, match=alg + ".*'theta'"):
        d_inference(PROMPT, constant_ed_model(np.zeros(ED_HP["N_V"])), k, ell_gen=1)
    assert d_inference(PROMPT, theta, k, ell_gen=0).shape == (0,)
    assert d_inference(PROMPT, theta, k, ell_gen=np.int64(2), tau=np.float32(0.5)).shape == (2,)


# ----------------------------------------------------------------------------------- Algorithm 15

EOS, BOS = special_tokens(ED_HP["N_V"])["eos_token"], special_tokens(ED_HP["N_V"])["bos_token"]
Z_CONTEXT = jnp.asarray([1, 2, 3, 4], jnp.int32)


def test_special_tokens_are_at_the_top():
    assert special_tokens(10) == dict(mask_token=7, bos_token=8, eos_token=9)


def test_alg15_stops_at_eos_or_at_the_guard():
    logits = np.zeros(ED_HP["N_V"])
    logits[EOS] = 3.0
    theta = constant_ed_model(logits)
    P = np_ed_transformer(np.asarray(Z_CONTEXT), np.asarray([BOS, 0, 5]), theta)
    np.testing.assert_allclose(P, np.repeat(P[:, :1], 3, axis=1), atol=1e-12)  # constant model
    x_hat = ed_inference(Z_CONTEXT, theta, jax.random.key(0), tau=0)
    np.testing.assert_array_equal(np.asarray(x_hat), [BOS, EOS])  # argmax is eos: stop at once
    # argmax is token 3: no eos ever; the guard returns x̂ of max_length (default ℓ_max), no eos.
    logits = np.zeros(ED_HP["N_V"])
    logits[3] = 3.0
    theta = constant_ed_model(logits)
    x_hat = np.asarray(ed_inference(Z_CONTEXT, theta, jax.random.key(0), tau=0))
    np.testing.assert_array_equal(x_hat, [BOS] + [3] * (ED_HP["ell_max"] - 1))
    x_hat = np.asarray(ed_inference(Z_CONTEXT, theta, jax.random.key(0), tau=0, max_length=4))
    np.testing.assert_array_equal(x_hat, [BOS, 3, 3, 3])
    full = ed_inference(Z_CONTEXT, theta, jax.random.key(0), tau=0, max_length=ED_HP["ell_max"] + 1)
    assert full.shape == (ED_HP["ell_max"] + 1,)


def test_alg15_sampled_stopping_follows_the_key_schedule():
    """With a constant p (p(eos) ≈ 0.3), x̂[i+1] = categorical(fold_in(key, i), log p); the loop
    stops right after the first eos, or at max_length."""
    logits = np.linspace(-1, 1, ED_HP["N_V"])
    logits[EOS] = 1.5
    theta = constant_ed_model(logits)
    log_p = np.log(np_ed_transformer(np.asarray(Z_CONTEXT), np.asarray([BOS]), theta)[:, 0])
    max_length, stopped, capped = ED_HP["ell_max"], 0, 0
    for seed in range(24):
        key = jax.random.key(seed)
        expected = [BOS]
        while len(expected) < max_length:
            y = int(
                jax.random.categorical(
                    jax.random.fold_in(key, len(expected) - 1), jnp.asarray(log_p)
                )
            )
            expected.append(y)
            if y == EOS:
                break
        x_hat = np.asarray(ed_inference(Z_CONTEXT, theta, key, max_length=max_length))
        np.testing.assert_array_equal(x_hat, expected)
        assert x_hat[0] == BOS and EOS not in x_hat[1:-1]
        stopped += x_hat[-1] == EOS
        capped += x_hat[-1] != EOS
    assert stopped > 0 and capped > 0  # both exits exercised


def test_alg15_random_model_and_bad_arguments():
    theta = fa.init_ed_transformer(jax.random.key(3), **ED_HP, dtype=jnp.float64)
    x_hat = ed_inference(Z_CONTEXT, theta, jax.random.key(1), tau=2.0, max_length=5)
    assert x_hat.dtype == Z_CONTEXT.dtype and int(x_hat[0]) == BOS and 2 <= x_hat.shape[0] <= 5
    np.testing.assert_array_equal(
        x_hat, ed_inference(Z_CONTEXT, theta, jax.random.key(1), tau=2.0, max_length=5)
    )
    k = jax.random.key(0)
    alg = r"EDInference \(Algorithm 15\)"
    for bad in [1, ED_HP["ell_max"] + 2]:
        with pytest.raises(ValueError, match=alg + ".*'max_length'"):
            ed_inference(Z_CONTEXT, theta, k, max_length=bad)
    with pytest.raises(TypeError, match=alg + ".*'max_length'"):
        ed_inference(Z_CONTEXT, theta, k, max_length=4.0)
    with pytest.raises(ValueError, match=alg + ".*'tau'"):
        ed_inference(Z_CONTEXT, theta, k, tau=-0.1)
    with pytest.raises(ValueError, match=alg + ".*'z'"):
        ed_inference(jnp.asarray(np.arange(ED_HP["ell_max"] + 1) % 5), theta, k)
    with pytest.raises(TypeError, match=alg + ".*'theta'"):
        ed_inference(Z_CONTEXT, peaked_d_model(), k)
