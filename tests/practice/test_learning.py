"""Proof that the training algorithms learn (issue 4), each in seconds on a 2-core CPU.

(a) Algorithm 13 (via the minibatch trainer) on real English text: held-out loss per character
    well below the text's unigram entropy.
(b) Algorithm 12 on real English text: the masked-token loss falls, and masked characters are
    recovered well above the frequency baseline (always guessing the most frequent character).
(c) Algorithm 11 + Algorithm 15 (τ → 0): sequence reversal to ≥ 99% exact match on held-out
    sequences (Algorithm 15 literally on the shortest contexts, its cached form on all).

The text is Python's own ``pydoc_data.topics`` (no download). Models are float32 and small; the
hyperparameters were chosen so that each test passes with a wide margin, not at the edge. The
trainer runs its fast steps (``fast=True``, what the command line runs; ~25 % less time here);
that they compute the literal steps' numbers is tests/test_fast.py's job.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from formal_algorithms import init_d_transformer, init_e_transformer, init_ed_transformer
from formal_algorithms.paper.inference import ed_inference
from formal_algorithms.paper.tokenization import (
    CharTokenizer,
    chunk_text,
    pydoc_topics_text,
    split_text,
)
from formal_algorithms.paper.training import draw_mask
from formal_algorithms.practice.cache import ed_inference_cached_batch
from formal_algorithms.practice.trainer import evaluate, make_optimizer, train


@pytest.fixture(scope="module")
def corpus():
    text = pydoc_topics_text()
    tok = CharTokenizer.from_text(text)
    train_text, held_text = split_text(text, held_out=0.1)  # the last 10%, never trained on
    counts = np.bincount(tok.encode(train_text), minlength=tok.N_V).astype(np.float64)
    return tok, train_text, held_text, counts / counts.sum()


def unigram_entropy(p):
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))  # nats


def windows(text, tok, ell, *, bos):
    """Consecutive full-length windows of ℓ tokens: ``bos`` + ℓ − 1 characters, or ℓ characters."""
    if bos:
        chunks = chunk_text(text, tok, ell, eos=False)
    else:
        chunks = [c[1:] for c in chunk_text(text, tok, ell + 1, eos=False)]
    return [c for c in chunks if len(c) == ell]


def test_d_training_on_english_beats_the_unigram_entropy(corpus):
    tok, train_text, held_text, p_train = corpus
    H = unigram_entropy(p_train)
    assert 2.5 < H < 4.0  # English characters: about 3.2 nats
    ell = 32
    data = windows(train_text, tok, ell, bos=True)
    held = windows(held_text, tok, ell, bos=True)[:128]
    theta = init_d_transformer(
        jax.random.key(0),
        N_V=tok.N_V,
        ell_max=ell,
        L=1,
        H=4,
        d_e=32,
        d_mlp=128,
        dtype=jnp.float32,
    )
    before = evaluate(theta, held).loss
    assert before > math.log(tok.N_V) - 0.5  # starts near uniform over V
    N_steps = 300
    optimizer = make_optimizer(1e-2, N_steps=N_steps, warmup_steps=20)
    theta, history = train(
        theta,
        data,
        jax.random.key(1),
        optimizer=optimizer,
        N_steps=N_steps,
        batch_size=32,
        fast=True,
    )
    after = evaluate(theta, held)
    assert np.all(np.isfinite(history))
    assert after.loss < 0.85 * H, (after.loss, H)  # measured: ≈ 0.70 H


def test_e_training_on_english_recovers_masked_characters(corpus):
    tok, train_text, held_text, p_train = corpus
    ell, p_mask = 16, 0.15
    data = windows(train_text, tok, ell, bos=False)
    held = windows(held_text, tok, ell, bos=False)[:1024]
    theta = init_e_transformer(
        jax.random.key(0),
        N_V=tok.N_V,
        ell_max=ell,
        L=1,
        H=4,
        d_e=32,
        d_mlp=128,
        dtype=jnp.float32,
    )
    key = jax.random.key(5)  # the same masks before and after training
    before = evaluate(theta, held, key, p_mask=p_mask)
    N_steps = 300
    optimizer = make_optimizer(3e-2, N_steps=N_steps, warmup_steps=20)
    theta, _ = train(
        theta,
        data,
        jax.random.key(1),
        optimizer=optimizer,
        N_steps=N_steps,
        batch_size=128,
        p_mask=p_mask,
        fast=True,
    )
    after = evaluate(theta, held, key, p_mask=p_mask)
    # The frequency baseline on exactly these masked characters (evaluate's documented masks).
    keys = jax.random.split(key, len(held))
    masked = np.asarray(jax.vmap(lambda k: draw_mask(k, ell, p_mask, ell))(keys))
    targets = np.stack(held)[masked]
    assert len(targets) == after.n_targets > 2000
    baseline_accuracy = float(np.mean(targets == np.argmax(p_train)))
    baseline_loss = float(-np.mean(np.log(np.maximum(p_train[targets], 1e-6))))
    assert after.loss < before.loss - 1.5  # the masked-token loss falls (from ≈ log N_V)
    assert after.loss < baseline_loss - 0.2, (after.loss, baseline_loss)  # context is used
    assert after.accuracy > baseline_accuracy + 0.05, (after.accuracy, baseline_accuracy)


def test_ed_training_and_ed_inference_learn_sequence_reversal():
    S = 6  # symbols 0..5; mask, bos, eos = 6, 7, 8
    N_V = S + 3
    bos, eos = N_V - 2, N_V - 1
    rng = np.random.default_rng(0)

    def pairs(n):
        out = []
        for _ in range(n):
            z = rng.integers(0, S, size=rng.integers(3, 7)).astype(np.int32)
            out.append((z, np.concatenate([[bos], z[::-1], [eos]]).astype(np.int32)))
        return out

    N_steps, batch_size = 200, 32
    data = pairs(N_steps * batch_size // 2)  # two epochs
    seen = {z.tobytes() for z, _ in data}
    held = [p for p in pairs(800) if p[0].tobytes() not in seen][:200]
    assert len(held) == 200 and {len(z) for z, _ in held} == {3, 4, 5, 6}
    theta = init_ed_transformer(
        jax.random.key(0),
        N_V=N_V,
        ell_max=8,
        L_enc=1,
        L_dec=1,
        H=4,
        d_e=32,
        d_mlp=128,
        dtype=jnp.float32,
    )
    optimizer = make_optimizer(1e-2, N_steps=N_steps, warmup_steps=20)
    theta, _ = train(
        theta,
        data,
        jax.random.key(1),
        optimizer=optimizer,
        N_steps=N_steps,
        batch_size=batch_size,
        fast=True,
    )
    keys = jax.random.split(jax.random.key(2), len(held))
    # Algorithm 15 literally (it compiles once per (ℓ_z, length(x̂)) pair, so on the short
    # contexts only) ...
    short = [i for i, (z, _) in enumerate(held) if len(z) == 3][:10]
    for i in short:
        x_hat = np.asarray(ed_inference(held[i][0], theta, keys[i], tau=0.0))
        np.testing.assert_array_equal(x_hat, held[i][1])
    # ... and on every held-out context in its cached form, which returns the same tokens as
    # the literal algorithm for the same key (tests/test_cache.py) and compiles once.
    x_hats = ed_inference_cached_batch([z for z, _ in held], theta, keys, tau=0.0)
    exact = [
        np.array_equal(np.asarray(x_hat), x) for x_hat, (_, x) in zip(x_hats, held, strict=True)
    ]
    assert np.mean(exact) >= 0.99
