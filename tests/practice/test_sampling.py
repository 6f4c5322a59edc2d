"""The sampling extensions beyond the paper's temperature (formal_algorithms.practice.sampling):
each filter equals a numpy float64 transcription of its definition, the filtered draw follows the
renormalised distribution (and is the paper's draw exactly when nothing is filtered), and the stop
string is cut from a stream however the text is split into pieces."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from formal_algorithms.paper.inference import sample_token, step_key
from formal_algorithms.practice import sampling as S

rng = np.random.default_rng(0)
N_V = 9


def random_logits(ties=False):
    logits = rng.normal(0, 2, N_V)
    if ties:  # a few exactly tied values
        logits[rng.choice(N_V, 3, replace=False)] = logits[0]
    return logits


def reference_top_k(logits, k):
    """The k largest logits, and every one tied with the k-th (k = 0: all)."""
    if k == 0 or k >= len(logits):
        return np.ones(len(logits), bool)
    return logits >= np.sort(logits)[::-1][k - 1]


def reference_top_p(logits, top_p, tau):
    """q ∝ p^{1/τ} in float64; walk the tokens by decreasing p (ties: lower index first) and keep
    each while the mass of the ones before it is below top_p."""
    p = np.exp(logits - logits.max())
    p /= p.sum()
    q = np.ones(len(p)) if np.isinf(tau) else p ** (1 / tau)
    q /= q.sum()
    keep = np.zeros(len(p), bool)
    mass = 0.0
    for rank, v in enumerate(sorted(range(len(p)), key=lambda v: (-logits[v], v))):
        if rank == 0 or mass < top_p or top_p >= 1:
            keep[v] = True
        mass += q[v]
    return keep


top_k_jit = jax.jit(S.top_k_keep)
top_p_jit = jax.jit(S.top_p_keep)
draw_jit = jax.jit(S.sample_token_filtered)
draws_jit = jax.jit(jax.vmap(S.sample_token_filtered, in_axes=(0, None, None, None, None)))


def test_top_k_keeps_the_k_most_likely_tokens_and_their_ties():
    for trial in range(20):
        logits = random_logits(ties=trial % 2 == 1)
        for k in (0, 1, 2, 4, N_V, N_V + 3):
            got = np.asarray(top_k_jit(jnp.asarray(logits), k))
            np.testing.assert_array_equal(got, reference_top_k(logits, k))
            if k and trial % 2 == 0:  # no ties: exactly min(k, N_V) tokens
                assert got.sum() == min(k, N_V)


def test_top_p_keeps_the_smallest_nucleus_of_q():
    for trial in range(20):
        logits = random_logits(ties=trial % 4 == 3)
        for top_p in (0.05, 0.3, 0.5, 0.9, 0.999, 1.0):
            for tau in (1.0, 0.5, 2.0, np.inf):
                got = np.asarray(top_p_jit(jnp.asarray(logits), top_p, tau))
                np.testing.assert_array_equal(
                    got, reference_top_p(logits, top_p, tau), err_msg=f"{top_p=}, {tau=}"
                )


def test_nothing_filtered_is_the_paper_draw_exactly():
    """k = 0 and top_p = 1 give the token of Algorithm 14's own draw (sample_token) for the same key."""
    logits = jnp.asarray(random_logits(), jnp.float32)
    key = jax.random.key(3)
    paper_draw = jax.jit(sample_token)
    for tau in (0.0, 0.7, 1.0, np.inf):
        for i in range(15):
            k = step_key(key, i)
            assert int(draw_jit(k, logits, tau, 0, 1.0)) == int(paper_draw(k, logits, tau))


def test_filtered_draws_follow_the_renormalised_distribution():
    logits = random_logits()
    keys = jax.random.split(jax.random.key(7), 20000)
    for tau, k, top_p in ((1.0, 4, 1.0), (0.7, 0, 0.8), (1.5, 3, 0.9)):
        keep = reference_top_k(logits, k) & reference_top_p(logits, top_p, tau)
        q = np.where(keep, np.exp((logits - logits.max()) / tau), 0.0)
        q /= q.sum()
        counts = np.bincount(
            np.asarray(draws_jit(keys, jnp.asarray(logits), tau, k, top_p)), minlength=N_V
        )
        assert counts[~keep].sum() == 0  # a dropped token is never drawn
        # every kept frequency within 5 standard deviations of its expectation
        sd = np.sqrt(len(keys) * q * (1 - q))
        assert np.all(np.abs(counts - len(keys) * q) <= 5 * sd + 1), (counts, len(keys) * q)


def test_the_limits_of_tau_with_filters():
    logits = jnp.asarray(random_logits(), jnp.float32)
    argmax = int(jnp.argmax(logits))
    for k, top_p in ((1, 1.0), (3, 0.2), (0, 0.5)):
        assert int(draw_jit(jax.random.key(0), logits, 0.0, k, top_p)) == argmax
    # τ = ∞: uniform over the 3 most likely tokens
    keys = jax.random.split(jax.random.key(1), 20000)
    counts = np.bincount(np.asarray(draws_jit(keys, logits, np.inf, 3, 1.0)), minlength=N_V)
    top3 = np.argsort(-np.asarray(logits))[:3]
    assert set(np.flatnonzero(counts)) == set(top3.tolist())
    assert np.all(np.abs(counts[top3] - 20000 / 3) < 5 * np.sqrt(20000 * (1 / 3) * (2 / 3)))


def test_bad_filter_settings_are_named():
    for bad, error in ((-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="top_k"):
            S.check_top_k("--top-k", bad)
    for bad, error in (
        (0.0, ValueError),
        (1.2, ValueError),
        ("0.5", TypeError),
        (-0.1, ValueError),
    ):
        with pytest.raises(error, match="top_p"):
            S.check_top_p("--top-p", bad)
    assert S.check_top_k("--top-k", 5) == 5 and S.check_top_p("--top-p", 1) == 1.0


def all_splits(text):
    """Every way to cut ``text`` into consecutive non-empty pieces."""
    for cuts in itertools.product((False, True), repeat=len(text) - 1):
        pieces, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                pieces.append(text[start:i])
                start = i
        yield pieces + [text[start:]]


def test_stop_string_is_cut_however_the_stream_is_split():
    for text, stop in (
        ("ab\n\ncd", "\n\n"),
        ("aXaXXb", "XX"),
        ("no stop", "zz"),
        ("ababc", "abc"),
        ("stop", "stop"),
        ("x", ""),
    ):
        at = text.find(stop) if stop else -1
        want = text if at < 0 else text[:at]
        for pieces in all_splits(text):
            shown = list(S.stop_at(iter(pieces), stop))
            assert "".join(shown) == want, (pieces, shown)
            assert all(shown)  # no empty pieces


def test_stop_string_stops_consuming_the_stream():
    consumed = []

    def pieces():
        for piece in ("one", " two", "\n\n", "three", " four"):
            consumed.append(piece)
            yield piece

    assert "".join(S.stop_at(pieces(), "\n\n")) == "one two"
    assert consumed == ["one", " two", "\n\n"]
