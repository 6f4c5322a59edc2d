"""Streaming Algorithm 14 for the command line: prefill once through the key/value cache, then
one jitted column per token, then a sliding window (see :func:`stream_d_inference`)."""

from __future__ import annotations

import functools
import sys
import time

import jax
import numpy as np

from ..paper.architectures import d_transformer_logits
from ..paper.functions import gelu
from ..paper.inference import D_INFERENCE, check_sampled, check_tau, step_key
from ..paper.normalisation import EPS
from ..paper.parameters import DTransformerParams
from ..practice.cache import d_cached_logits, init_kv_cache, length_bucket
from ..practice.sampling import check_top_k, check_top_p, sample_token_filtered, stop_at


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _prefill(theta, prompt, ell, key, tau, top_k, top_p, *, activation, eps):
    """Algorithm 14, lines 3-5 for i = 1 through a fresh cache: the prompt (right-padded to its
    length bucket) at positions 0…, then the first token from column ℓ − 1."""
    logits, cache = d_cached_logits(
        prompt, 0, theta, init_kv_cache(theta), activation=activation, eps=eps
    )
    p = jax.lax.dynamic_index_in_dim(logits, ell - 1, axis=1, keepdims=False)
    return sample_token_filtered(step_key(key, 0), p, tau, top_k, top_p), cache


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _cached_step(theta, cache, y, t, key, i, tau, top_k, top_p, *, activation, eps):
    """Lines 6 then 3-5: the last token y enters the cache at position t; sample token i."""
    logits, cache = d_cached_logits(y[None], t, theta, cache, activation=activation, eps=eps)
    return sample_token_filtered(step_key(key, i), logits[:, 0], tau, top_k, top_p), cache


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _window_step(theta, x_window, key, i, tau, top_k, top_p, *, activation, eps):
    """Lines 3-5 on a full window of ℓ_max tokens (one executable for every step)."""
    P_col = d_transformer_logits(x_window, theta, activation=activation, eps=eps)[:, -1]
    return sample_token_filtered(step_key(key, i), P_col, tau, top_k, top_p)


def _checked(x, theta, context, anchor, tau, top_k, top_p):
    """Algorithm 14's arguments, checked as the literal d_inference checks them."""
    if not isinstance(theta, DTransformerParams):
        raise TypeError(
            f"DInference (Algorithm 14): argument 'theta' must be DTransformerParams, got "
            f"{type(theta)}"
        )
    tau = check_tau("DInference (Algorithm 14)", tau)
    top_k = check_top_k("DInference (Algorithm 14)", top_k)
    top_p = check_top_p("DInference (Algorithm 14)", top_p)
    x = np.asarray(x, np.int32)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    if x.ndim != 1 or x.size == 0 or x.min() < 0 or x.max() >= N_V:
        raise ValueError(
            f"DInference (Algorithm 14): argument 'x' must be a non-empty 1-D sequence of ids "
            f"in [0, N_V = {N_V})"
        )
    context = ell_max if context is None else context
    if anchor not in (0, 1) or not anchor < context <= ell_max:
        raise ValueError(
            f"DInference (Algorithm 14): arguments 'anchor' = {anchor!r} and 'context' = "
            f"{context!r} must satisfy anchor in (0, 1) and anchor < context <= ell_max = {ell_max}"
        )
    return x, context, tau, top_k, top_p


def stream_d_inference(
    x,
    theta: DTransformerParams,
    key,
    *,
    ell_gen: int,
    tau=1.0,
    context=None,
    anchor=0,
    activation=gelu,
    eps=EPS,
    top_k=0,
    top_p=1.0,
):
    """Algorithm 14 as a generator: yields the ``ell_gen`` tokens ``y`` one by one (Python ints).

    Token i is drawn with ``fold_in(key, i)`` (as in :mod:`~formal_algorithms.inference`) from the
    last column of DTransformer on the sequence so far, ``x_i`` (the prompt and tokens 0…i−1):

    - while ``x_i`` fits the ``context`` (default ℓ_max; at most ℓ_max tokens), from the key/value
      cache: one prefill of the prompt, then one jitted column per token
      (:func:`~.cache.d_cached_logits`). These tokens equal
      :func:`~formal_algorithms.inference.d_inference` and
      :func:`~formal_algorithms.cache.d_inference_cached` for the same key.
    - beyond, from the window ``[x_i[:anchor], x_i[−(context − anchor):]]`` at positions
      0…context − 1 (one jitted forward per token, compiled once). ``anchor=0`` with the full
      context is the literal algorithm's window, ``d_inference(window=True)``; ``anchor=1`` keeps
      the prompt's first token (``bos`` for the CLI) where training put it.

    ``top_k``, ``top_p``: the filters of :mod:`~formal_algorithms.practice.sampling` before each
    draw (departures from the paper, off by default: with ``top_k=0, top_p=1.0`` every token is
    the paper's draw).
    """
    x, context, tau, top_k, top_p = _checked(x, theta, context, anchor, tau, top_k, top_p)
    kw = dict(activation=activation, eps=eps)
    filters = (np.int32(top_k), np.float32(top_p))  # runtime values: no recompilation
    ell = x.shape[0]
    # the tokens i with ℓ + i ≤ context come from the cache
    n_cached = min(ell_gen, context - ell + 1) if ell <= context else 0
    if n_cached:  # the cached phase
        prompt = np.zeros(length_bucket(ell, theta.W_p.shape[1]), np.int32)
        prompt[:ell] = x
        y, cache = _prefill(theta, prompt, ell, key, tau, *filters, **kw)  # token 0
        for i in range(1, n_cached + 1):
            y = int(y)
            check_sampled(D_INFERENCE, y, i - 1, theta)  # -1: no distribution (issue 18)
            yield y
            x = np.append(x, np.int32(y))
            if i < n_cached:  # token i: y enters the cache at position ℓ + i − 1
                y, cache = _cached_step(
                    theta, cache, np.int32(y), ell + i - 1, key, i, tau, *filters, **kw
                )
    for i in range(n_cached, ell_gen):  # the sliding window
        window = np.concatenate([x[:anchor], x[len(x) - (context - anchor) :]])
        y = int(_window_step(theta, window, key, i, tau, *filters, **kw))
        check_sampled(D_INFERENCE, y, i, theta)
        yield y
        x = np.append(x, np.int32(y))


def say_window(n: int, context: int) -> None:
    """Say (on stderr) that a prompt of ``n`` tokens with bos is read as a window of ``context``:
    bos and the latest ``context − 1`` tokens; silent when it fits."""
    if n > context:
        message = f"the prompt is {n - 1} tokens; this model reads bos and the last {context - 1}"
        print(f"({message} of them)", file=sys.stderr, flush=True)


def stream_sample(
    theta,
    tokenizer,
    prompt: str,
    key,
    length,
    tau,
    activation,
    eps,
    *,
    top_k=0,
    top_p=1.0,
    stop=None,
):
    """Print the prompt, then the continuation as it is generated (flushing each piece); stop at
    ``eos_token`` (the end of a document) or before the first ``stop`` string (never printed).
    ``top_k``/``top_p`` filter each draw (:mod:`~formal_algorithms.practice.sampling`).
    Returns ``(text, n_tokens, seconds)``."""
    from ..practice.bpe import stream_text

    x = tokenizer.encode(prompt, bos=True)  # training sequences start with bos
    sys.stdout.write(prompt)
    sys.stdout.flush()
    # At most ℓ_max − 1 tokens per step (the last position is never trained), bos kept first.
    context = theta.W_p.shape[1] - 1 if theta.W_p.shape[1] > 2 else theta.W_p.shape[1]
    say_window(len(x), context)
    tokens = stream_d_inference(
        x,
        theta,
        key,
        ell_gen=length,
        tau=tau,
        context=context,
        anchor=1,
        activation=activation,
        eps=eps,
        top_k=top_k,
        top_p=top_p,
    )
    generated = []

    def until_eos():
        for t in tokens:
            if t == tokenizer.eos_token:
                return
            generated.append(t)
            yield t

    start = time.perf_counter()
    pieces = []
    for piece in stop_at(stream_text(tokenizer, until_eos()), stop):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - start
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces), len(generated), seconds
