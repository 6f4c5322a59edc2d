"""The command-line program ``formal-algorithms`` (also ``python -m formal_algorithms``).

Subcommands, one per thing the paper's algorithms do:

- ``train``: tokenize a corpus (default: Python's own ``pydoc_data`` help texts, nothing to
  download), train a DTransformer (Algorithm 10) on next-token prediction with the minibatch
  trainer (Algorithm 13's loss, AdamW), report held-out loss next to the unigram entropy, write a
  safetensors checkpoint and a loss-curve PNG, and print a sample (Algorithm 14, cached).
- ``sample``: continue a prompt from a checkpoint with Algorithm 14, streaming tokens as they come.
- ``attention``: draw every head's attention pattern (Algorithm 10, line 6) for a prompt.
- ``seq2seq``: train an EDTransformer (Algorithms 8, 11) on sequence reversal and report exact-match
  accuracy of greedy Algorithm 15 (cached) on held-out sequences.
- ``mlm``: train an ETransformer (Algorithms 9, 12) on masked characters and report recovery
  accuracy next to the most-frequent-character baseline.

Streaming (``sample``) is :func:`stream_d_inference`: Algorithm 14 one token at a time, from the
public per-position step of :mod:`formal_algorithms.cache` (prefill once, then one jitted column
per token); its tokens equal ``d_inference`` and ``d_inference_cached`` for the same key while the
sequence fits the context. The CLI reads at most ℓ_max − 1 tokens per step: Algorithm 13 trains
no prediction at position ℓ_max − 1 (the last column of a length-ℓ_max sequence has no target,
and W_p's last column gets no gradient at all), so sampling from that column is sampling from an
untrained model. Longer samples continue with a sliding window that keeps the prompt's first token
(``bos``) at position 0 and the latest tokens after it, so that every step looks like a training
sequence, which always starts with ``bos``.

Errors the user can cause (a missing or empty file, a checkpoint of another model, a corrupted
checkpoint, a character the tokenizer does not know) end the program with one line on stderr,
``formal-algorithms: error: …``, and exit status 1; set ``FORMAL_ALGORITHMS_TRACEBACK=1`` to see
the traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from .architectures import (
    DTransformerParams,
    d_transformer_logits,
    e_transformer_logits,
    init_d_transformer,
    init_e_transformer,
    init_ed_transformer,
)
from .cache import d_cached_logits, ed_inference_cached_batch, init_kv_cache, length_bucket
from .checkpoint import load_checkpoint, save_checkpoint
from .functions import gelu, gelu_tanh, relu
from .inference import check_tau, sample_token, step_key
from .normalisation import EPS
from .tokenization import CharTokenizer, chunk_text, pydoc_topics_text, split_text

PROG = "formal-algorithms"
ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": relu}
DEFAULT_OUT = pathlib.Path("runs") / "dtransformer"
CHECKPOINT_NAME = "model.safetensors"


# ==================================================================================== helpers


def _say(*parts, file=None):
    print(*parts, file=file or sys.stdout, flush=True)


def _read_text(path: str | None) -> tuple[str, str]:
    """``(text, description)``: the ``--text`` file, or the default corpus."""
    if path is None:
        return pydoc_topics_text(), "Python's pydoc_data/topics help texts"
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--text file {path!r} does not exist")
    if p.is_dir():
        raise ValueError(f"--text {path!r} is a directory; give a text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"--text file {path!r} is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    if not text.strip():
        raise ValueError(f"--text file {path!r} is empty")
    return text, f"{path} ({p.stat().st_size:,} bytes)"


def _make_tokenizer(kind: str, text: str, train_text: str, vocab_size: int):
    """Character level (the vocabulary of the whole text, so that the held-out part encodes) or
    byte-level BPE trained on the training part only (it encodes any text)."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    from .bpe import BPETokenizer

    return BPETokenizer.train(train_text, vocab_size)


def _chunks(text, tokenizer, ell_max, what):
    """Paper §3's chunking to ℓ_max (:func:`~.tokenization.chunk_text`); only full-length chunks
    are kept when there are any, so every batch has one shape and the step compiles once."""
    chunks = chunk_text(text, tokenizer, ell_max)
    full = [c for c in chunks if len(c) == ell_max]
    chunks = full or chunks
    if not chunks or max(len(c) for c in chunks) < 2:
        raise ValueError(f"the {what} text is too short to make a training sequence")
    return chunks


def _unigram_entropy(sequences) -> float:
    """Entropy (nats) of the token frequencies of the predicted tokens (all but each ``bos``)."""
    counts = np.bincount(np.concatenate([s[1:] for s in sequences]))
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def _n_params(theta) -> int:
    return sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(theta))


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _progress_callback(total: int, desc: str):
    """A tqdm bar for trainer.train's ``callback(step, loss, stats)``: loss, tokens/s, ETA.

    Tokens/s counts the predicted tokens of each batch and leaves out the first step (which
    compiles). The bar goes to stderr, so stdout holds only results.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5, smoothing=0.1)  # fmt: skip
    state = {"t0": None, "tokens": 0.0}

    def callback(step, loss, stats):
        loss = float(loss)  # waits for the step: the rate is honest
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"] = now  # after the first (compiling) step
        else:
            state["tokens"] += float(stats.n_targets)
        elapsed = now - state["t0"]
        rate = state["tokens"] / elapsed if elapsed > 0 else 0.0
        bar.set_postfix_str(f"loss {loss:.3f}, {rate:,.0f} tok/s", refresh=False)
        bar.update(1)

    return bar, callback


def _train(theta, data, key, args, desc, **kw):
    from .trainer import make_optimizer, train

    optimizer = make_optimizer(
        args.lr, N_steps=args.steps, warmup_steps=min(args.warmup, args.steps // 2),
        weight_decay=args.weight_decay, clip_norm=1.0,
    )  # fmt: skip
    bar, callback = _progress_callback(args.steps, desc)
    try:
        theta, history = train(theta, data, key, optimizer=optimizer, N_steps=args.steps,
                               batch_size=args.batch_size, callback=callback, fast=True, **kw)  # fmt: skip
    finally:
        bar.close()
    return theta, history


def _check_positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


# ====================================================================== streaming Algorithm 14


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _prefill(theta, prompt, ell, key, tau, *, activation, eps):
    """Algorithm 14, lines 3-5 for i = 1 through a fresh cache: the prompt (right-padded to its
    length bucket) at positions 0…, then the first token from column ℓ − 1."""
    logits, cache = d_cached_logits(prompt, 0, theta, init_kv_cache(theta),
                                    activation=activation, eps=eps)  # fmt: skip
    p = jax.lax.dynamic_index_in_dim(logits, ell - 1, axis=1, keepdims=False)
    return sample_token(step_key(key, 0), p, tau), cache


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _cached_step(theta, cache, y, t, key, i, tau, *, activation, eps):
    """Lines 6 then 3-5: the last token y enters the cache at position t; sample token i."""
    logits, cache = d_cached_logits(y[None], t, theta, cache, activation=activation, eps=eps)
    return sample_token(step_key(key, i), logits[:, 0], tau), cache


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _window_step(theta, x_window, key, i, tau, *, activation, eps):
    """Lines 3-5 on a full window of ℓ_max tokens (one executable for every step)."""
    P_col = d_transformer_logits(x_window, theta, activation=activation, eps=eps)[:, -1]
    return sample_token(step_key(key, i), P_col, tau)


def stream_d_inference(x, theta: DTransformerParams, key, *, ell_gen: int, tau=1.0,
                       context=None, anchor=0, activation=gelu, eps=EPS):  # fmt: skip
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
    """
    if not isinstance(theta, DTransformerParams):
        raise TypeError(
            f"DInference (Algorithm 14): argument 'theta' must be DTransformerParams, got "
            f"{type(theta)}"
        )
    tau = check_tau("DInference (Algorithm 14)", tau)
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
    kw = dict(activation=activation, eps=eps)
    ell = x.shape[0]
    # the tokens i with ℓ + i ≤ context come from the cache
    n_cached = min(ell_gen, context - ell + 1) if ell <= context else 0
    if n_cached:  # the cached phase
        prompt = np.zeros(length_bucket(ell, ell_max), np.int32)
        prompt[:ell] = x
        y, cache = _prefill(theta, jnp.asarray(prompt), ell, key, tau, **kw)  # token 0
        for i in range(1, n_cached + 1):
            y = int(y)
            yield y
            x = np.append(x, np.int32(y))
            if i < n_cached:  # token i: y enters the cache at position ℓ + i − 1
                y, cache = _cached_step(theta, cache, jnp.int32(y), ell + i - 1, key, i, tau, **kw)
    for i in range(n_cached, ell_gen):  # the sliding window
        window = np.concatenate([x[:anchor], x[len(x) - (context - anchor) :]])
        y = int(_window_step(theta, jnp.asarray(window), key, i, tau, **kw))
        yield y
        x = np.append(x, np.int32(y))


def _stream_sample(theta, tokenizer, prompt: str, key, length, tau, activation, eps):
    """Print the prompt, then the continuation as it is generated (flushing each piece); stop at
    ``eos_token`` (the end of a document). Returns ``(text, n_tokens, seconds)``."""
    from .bpe import stream_text

    x = tokenizer.encode(prompt, bos=True)  # training sequences start with bos
    sys.stdout.write(prompt)
    sys.stdout.flush()
    # At most ℓ_max − 1 tokens per step (the last position is never trained), bos kept first.
    context = theta.W_p.shape[1] - 1 if theta.W_p.shape[1] > 2 else theta.W_p.shape[1]
    tokens = stream_d_inference(x, theta, key, ell_gen=length, tau=tau, context=context,
                                anchor=1, activation=activation, eps=eps)  # fmt: skip
    generated = []

    def until_eos():
        for t in tokens:
            if t == tokenizer.eos_token:
                return
            generated.append(t)
            yield t

    start = time.perf_counter()
    pieces = []
    for piece in stream_text(tokenizer, until_eos()):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - start
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces), len(generated), seconds


# ===================================================================================== train


def cmd_train(args) -> int:
    _check_positive(args, "steps", "batch_size", "d_e", "layers", "heads", "sample_length")
    if args.ell_max < 2:
        raise ValueError(f"--ell-max must be at least 2, got {args.ell_max}")
    tau = check_tau("--temperature", args.temperature)
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    text, source = _read_text(args.text)
    train_text, held_text = split_text(text, 0.1)
    tokenizer = _make_tokenizer(args.tokenizer, text, train_text, args.vocab_size)
    data = _chunks(train_text, tokenizer, args.ell_max, "training")
    held = _chunks(held_text, tokenizer, args.ell_max, "held-out")
    n_train = sum(len(c) - 1 for c in data)
    _say(f"corpus      {source}: {len(text):,} characters, last 10% held out")
    _say(f"tokenizer   {args.tokenizer}, N_V = {tokenizer.N_V} (mask, bos, eos = "
         f"{tokenizer.mask_token}, {tokenizer.bos_token}, {tokenizer.eos_token})")  # fmt: skip
    _say(f"data        {len(data):,} training sequences of ≤ {args.ell_max} tokens "
         f"({n_train:,} predicted tokens), {len(held):,} held out")  # fmt: skip

    key_init, key_train, key_sample = jax.random.split(jax.random.key(args.seed), 3)
    d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_d_transformer(key_init, N_V=tokenizer.N_V, ell_max=args.ell_max, L=args.layers,
                               H=args.heads, d_e=args.d_e, d_mlp=d_mlp)  # fmt: skip
    _say(f"model       DTransformer (Algorithm 10): L = {args.layers}, H = {args.heads}, "
         f"d_e = {args.d_e}, d_mlp = {d_mlp}, ell_max = {args.ell_max}; "
         f"{_n_params(theta) / 1e6:.2f} M parameters")  # fmt: skip
    epochs = args.steps * args.batch_size / len(data)
    _say(f"training    {args.steps} steps × {args.batch_size} sequences ({epochs:.1f} epochs), "
         f"AdamW lr {args.lr:g}, warmup + cosine decay, clip 1.0 (the first step compiles)")  # fmt: skip
    theta, history = _train(theta, data, key_train, args, "train")
    train_seconds = time.perf_counter() - started

    from .trainer import evaluate

    result = evaluate(theta, held, batch_size=args.batch_size)
    unigram = _unigram_entropy(data)
    n_chars = len(tokenizer.decode(np.concatenate(held)))
    bits_per_char = result.loss * result.n_targets / max(n_chars, 1) / math.log(2)
    _say(f"held-out    loss {result.loss:.3f} nats/token ({bits_per_char:.2f} bits/char), "
         f"next-token accuracy {result.accuracy:.1%}; unigram entropy {unigram:.3f} nats/token")  # fmt: skip

    from .visualise import plot_loss

    config = {k: getattr(args, k) for k in (
        "steps", "batch_size", "ell_max", "d_e", "layers", "heads", "lr", "warmup",
        "weight_decay", "seed", "tokenizer", "vocab_size")}  # fmt: skip
    config.update(d_mlp=d_mlp, text=args.text)
    path = save_checkpoint(
        out / CHECKPOINT_NAME, theta, tokenizer=tokenizer.to_dict(),
        extra={"family": "language model (Algorithms 10, 13, 14)", "activation": "gelu",
               "eps": EPS, "config": config, "corpus": source, "held_out_loss": result.loss,
               "unigram_entropy": unigram},
        arrays={"loss_history": np.asarray(history, np.float32)},
    )  # fmt: skip
    png = plot_loss(history, out / "loss.png", held_out=result.loss, unigram=unigram,
                    title=f"DTransformer on {source.split(' (')[0]}")  # fmt: skip
    _say(f"wrote       {path} and {png}")
    _say(f"sample      (Algorithm 14, τ = {tau:g}, {args.sample_length} tokens, seed {args.seed}):")
    _say("-" * 78)
    _stream_sample(theta, tokenizer, args.prompt, key_sample, args.sample_length, tau, gelu, EPS)
    _say("-" * 78)
    _say(f"done in {_duration(time.perf_counter() - started)} (training {_duration(train_seconds)})."
         f" More: {PROG} sample --checkpoint {path} --prompt 'The '")  # fmt: skip
    return 0


# =============================================================================== sample, attention


def _load_lm(path):
    """θ, tokenizer, activation and eps of a ``train`` checkpoint, or a one-line error."""
    from .bpe import tokenizer_from_dict

    checkpoint = load_checkpoint(path)
    if checkpoint.architecture != "DTransformer":
        raise ValueError(
            f"checkpoint {str(path)!r} holds an {checkpoint.architecture}, not a DTransformer "
            f"(Algorithm 10); use a checkpoint written by '{PROG} train'"
        )
    if checkpoint.tokenizer is None:
        raise ValueError(f"checkpoint {str(path)!r} has no tokenizer in its metadata")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    if tokenizer.N_V != checkpoint.hyperparameters["N_V"]:
        raise ValueError(
            f"checkpoint {str(path)!r}: its tokenizer has N_V = {tokenizer.N_V} but θ has "
            f"N_V = {checkpoint.hyperparameters['N_V']}"
        )
    name = checkpoint.extra.get("activation", "gelu")
    if name not in ACTIVATIONS:
        raise ValueError(f"checkpoint {str(path)!r} names an unknown activation {name!r}")
    return checkpoint, tokenizer, ACTIVATIONS[name], float(checkpoint.extra.get("eps", EPS))


def cmd_sample(args) -> int:
    _check_positive(args, "length")
    tau = check_tau("--temperature", args.temperature)
    checkpoint, tokenizer, activation, eps = _load_lm(args.checkpoint)
    _stream_sample(checkpoint.theta, tokenizer, args.prompt, jax.random.key(args.seed),
                   args.length, tau, activation, eps)  # fmt: skip
    return 0


def cmd_benchmark(args) -> int:
    from . import benchmark  # needs the train and interop extras (optax, torch, transformers)

    benchmark.main(args)
    return 0


def cmd_attention(args) -> int:
    from .visualise import d_attention_weights, plot_attention, token_label

    checkpoint, tokenizer, activation, eps = _load_lm(args.checkpoint)
    x = tokenizer.encode(args.prompt, bos=True)
    ell_max = checkpoint.hyperparameters["ell_max"]
    if len(x) > ell_max:
        raise ValueError(
            f"--prompt is {len(x)} tokens with bos, more than the model's ell_max = {ell_max}"
        )
    weights = jax.jit(d_attention_weights, static_argnames=("activation", "eps"))
    A, _, _ = weights(jnp.asarray(x), checkpoint.theta, activation=activation, eps=eps)
    labels = [token_label(tokenizer.decode([t], special="show")) for t in x.tolist()]
    hp = checkpoint.hyperparameters
    path = plot_attention(
        A, labels, args.out,
        title=f"Algorithm 10 attention weights A[t_z, t_x] (L = {hp['L']}, H = {hp['H']}): "
        f"{args.prompt[:40]!r}",
    )  # fmt: skip
    _say(f"wrote {path}: {hp['L']} layers × {hp['H']} heads, {len(x)} tokens "
         f"(rows: key t_z, columns: query t_x; each column sums to 1)")  # fmt: skip
    return 0


# ==================================================================================== seq2seq


def reversal_pairs(rng, n: int, n_symbols: int, max_len: int, exclude=frozenset()):
    """``n`` distinct pairs ``(z, x)``: ``z`` a random sequence of 1…max_len symbols, ``x`` =
    ``[bos, reversed z, eos]`` (symbols 0…n_symbols − 1; N_V = n_symbols + 3). Sequences in
    ``exclude`` are skipped, so held-out data never repeats a training sequence."""
    bos, eos = n_symbols + 1, n_symbols + 2
    seen, pairs = set(exclude), []
    for _ in range(100 * n):
        if len(pairs) == n:
            break
        z = tuple(int(v) for v in rng.integers(0, n_symbols, rng.integers(1, max_len + 1)))
        if z in seen:
            continue
        seen.add(z)
        pairs.append((np.asarray(z, np.int32), np.asarray([bos, *z[::-1], eos], np.int32)))
    if len(pairs) < n:
        raise ValueError(f"cannot draw {n} distinct sequences; raise --max-len or --symbols")
    return pairs, seen


def cmd_seq2seq(args) -> int:
    _check_positive(args, "steps", "batch_size", "d_e", "layers", "heads", "symbols", "max_len")
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n_sym, max_len = args.symbols, args.max_len
    train_pairs, seen = reversal_pairs(rng, args.train_size, n_sym, max_len)
    test_pairs, _ = reversal_pairs(rng, args.test_size, n_sym, max_len, exclude=seen)
    N_V, ell_max = n_sym + 3, max_len + 2
    key_init, key_train, key_gen = jax.random.split(jax.random.key(args.seed), 3)
    d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_ed_transformer(key_init, N_V=N_V, ell_max=ell_max, L_enc=args.layers,
                                L_dec=args.layers, H=args.heads, d_e=args.d_e, d_mlp=d_mlp)  # fmt: skip
    _say(f"task        reverse a sequence of 1-{max_len} symbols from {n_sym}: "
         f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs")  # fmt: skip
    _say(f"model       EDTransformer (Algorithm 8): L_enc = L_dec = {args.layers}, H = "
         f"{args.heads}, d_e = {args.d_e}, d_mlp = {d_mlp}; {_n_params(theta) / 1e6:.2f} M "
         f"parameters; training: Algorithm 11's loss, {args.steps} AdamW steps")  # fmt: skip
    theta, history = _train(theta, train_pairs, key_train, args, "seq2seq")

    contexts = [z for z, _ in test_pairs]
    keys = jax.random.split(key_gen, len(contexts))
    x_hats = ed_inference_cached_batch(contexts, theta, keys, tau=0)  # Algorithm 15, greedy
    correct = [
        np.array_equal(np.asarray(xh), x) for xh, (_, x) in zip(x_hats, test_pairs, strict=True)
    ]
    accuracy = float(np.mean(correct))
    _say(f"held-out    exact-match accuracy {accuracy:.1%} ({sum(correct)}/{len(correct)}) "
         f"of Algorithm 15 (cached, τ = 0); final training loss {history[-1]:.3f}")  # fmt: skip

    def show(tokens):
        names = {n_sym + 1: "<bos>", n_sym + 2: "<eos>", n_sym: "<mask>"}
        return " ".join(names.get(int(t), str(int(t))) for t in tokens)

    for xh, (z, x), ok in list(zip(x_hats, test_pairs, correct, strict=True))[: args.examples]:
        _say(
            f"  z = {show(z):<{2 * max_len}} → x̂ = {show(xh)}  {'✓' if ok else '✗ want ' + show(x)}"
        )
    _say(f"done in {_duration(time.perf_counter() - started)}")
    return 0


# ======================================================================================== mlm


def cmd_mlm(args) -> int:
    _check_positive(args, "steps", "batch_size", "d_e", "layers", "heads")
    if not 0 < args.p_mask < 1:
        raise ValueError(f"--p-mask must be in (0, 1), got {args.p_mask}")
    from .trainer import evaluate
    from .training import draw_mask

    started = time.perf_counter()
    text, source = _read_text(args.text)
    train_text, held_text = split_text(text, 0.1)
    tokenizer = CharTokenizer.from_text(text)
    data = _chunks(train_text, tokenizer, args.ell_max, "training")
    held = _chunks(held_text, tokenizer, args.ell_max, "held-out")[: args.test_size]
    key_init, key_train, key_eval = jax.random.split(jax.random.key(args.seed), 3)
    d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_e_transformer(key_init, N_V=tokenizer.N_V, ell_max=args.ell_max, L=args.layers,
                               H=args.heads, d_e=args.d_e, d_mlp=d_mlp)  # fmt: skip
    _say(f"corpus      {source}: {len(data)} training sequences of ≤ {args.ell_max} characters, "
         f"{len(held)} held out; p_mask = {args.p_mask}")  # fmt: skip
    _say(f"model       ETransformer (Algorithm 9): L = {args.layers}, H = {args.heads}, "
         f"d_e = {args.d_e}, d_mlp = {d_mlp}; {_n_params(theta) / 1e6:.2f} M parameters; "
         f"training: Algorithm 12's loss, {args.steps} AdamW steps")  # fmt: skip
    theta, _ = _train(theta, data, key_train, args, "mlm", p_mask=args.p_mask)

    result = evaluate(theta, held, key_eval, batch_size=args.batch_size, p_mask=args.p_mask)
    # The baseline on the very same masked positions (evaluate's masks: split(key, N)[n]):
    # always guess the training text's most frequent character.
    counts = np.bincount(np.concatenate(data), minlength=tokenizer.N_V)
    counts[tokenizer.bos_token] = counts[tokenizer.eos_token] = 0
    guess = int(np.argmax(counts))
    keys = jax.random.split(key_eval, len(held))
    hits = total = 0
    masks = []
    for k, x in zip(keys, held, strict=True):
        masked = np.asarray(draw_mask(k, len(x), args.p_mask, args.ell_max))
        masks.append(masked)
        hits += int(np.sum(x[masked] == guess))
        total += int(masked.sum())
    baseline = hits / max(total, 1)
    _say(f"held-out    masked-character recovery accuracy {result.accuracy:.1%} on "
         f"{result.n_targets} masked characters; baseline (always {tokenizer.decode([guess])!r}) "
         f"{baseline:.1%}; loss {result.loss:.3f} nats/char")  # fmt: skip

    # An example: the first held-out sequences (without their bos) side by side, one line.
    logits_fn = jax.jit(e_transformer_logits)
    text, masked_text, filled = [], [], []
    for x, masked in list(zip(held, masks, strict=True))[: max(1, 72 // args.ell_max)]:
        x_tilde = np.where(masked, tokenizer.mask_token, x)
        guess_x = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_tilde), theta), axis=0))
        for t in range(1, len(x)):  # position 0 is bos
            c = tokenizer.decode([x[t]], special="show")
            text.append(c)
            masked_text.append("_" if masked[t] else c)
            filled.append(tokenizer.decode([guess_x[t]], special="show") if masked[t] else c)
    for name, chars in (("text  ", text), ("masked", masked_text), ("filled", filled)):
        _say(f"  {name} " + "".join(chars).replace("\n", "⏎"))
    _say(f"done in {_duration(time.perf_counter() - started)}")
    return 0


# ===================================================================================== parser


def _model_options(p, *, d_e, layers, heads, steps, batch_size, lr, warmup, weight_decay):
    p.add_argument("--d-e", type=int, default=d_e, help="embedding width d_e (default %(default)s)")
    p.add_argument("--layers", type=int, default=layers, help="layers L (default %(default)s)")
    p.add_argument("--heads", type=int, default=heads, help="heads H (default %(default)s)")
    p.add_argument("--d-mlp", type=int, default=None, help="MLP width d_mlp (default 4 d_e)")
    p.add_argument("--steps", type=int, default=steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help="sequences per step (default %(default)s)")  # fmt: skip
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    p.add_argument("--warmup", type=int, default=warmup,
                   help="linear warmup steps (default %(default)s)")  # fmt: skip
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="AdamW weight decay of the matrices (default %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The algorithms of 'Formal Algorithms for Transformers' (Phuong & Hutter, "
        "2022), run for real. Start with: formal-algorithms train",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train a DTransformer (Algorithm 10) on text, then sample from it",
        description="Tokenize a corpus (default: Python's own pydoc help texts), train a "
        "DTransformer (Algorithms 10, 13) with AdamW, report held-out loss, write a checkpoint "
        "and a loss plot to --out, print a sample (Algorithm 14). About 3 minutes on 2 CPU cores.",
    )  # fmt: skip
    p.add_argument("--text", metavar="FILE", help="UTF-8 text file (default: pydoc_data/topics)")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                   help="output directory (default %(default)s)")  # fmt: skip
    p.add_argument("--tokenizer", choices=("char", "bpe"), default="char",
                   help="character level (default) or byte-level BPE trained on the text")  # fmt: skip
    p.add_argument("--vocab-size", type=int, default=512,
                   help="BPE vocabulary size N_V, specials included (default %(default)s)")  # fmt: skip
    p.add_argument("--ell-max", type=int, default=64, help="context length (default %(default)s)")
    _model_options(p, d_e=96, layers=3, heads=3, steps=2400, batch_size=16, lr=3e-3, warmup=100,
                   weight_decay=0.1)  # fmt: skip
    p.add_argument("--prompt", default="", help="prompt of the final sample (default: none)")
    p.add_argument("--sample-length", type=int, default=300,
                   help="tokens in the final sample (default %(default)s)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature τ (default %(default)s; 0 = argmax)")  # fmt: skip
    p.set_defaults(run=cmd_train)

    p = sub.add_parser(
        "sample", help="continue a prompt with a trained checkpoint (Algorithm 14), streaming",
        description="Load a checkpoint written by 'train' and continue --prompt with Algorithm 14 "
        "(key/value cache; then a window of bos and the latest tokens), printing tokens as they "
        "are generated.",
    )  # fmt: skip
    p.add_argument("--checkpoint", metavar="PATH", default=str(DEFAULT_OUT / CHECKPOINT_NAME),
                   help="checkpoint (default %(default)s)")  # fmt: skip
    p.add_argument("--prompt", default="", help="text to continue (default: none)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature τ (default %(default)s; 0 = argmax)")  # fmt: skip
    p.add_argument(
        "--length", type=int, default=256, help="tokens to generate (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser(
        "attention", help="draw every head's attention pattern for a prompt as a PNG grid",
        description="Replay Algorithm 10 on --prompt and draw the attention weights of every "
        "head of every layer, in the paper's orientation A[t_z, t_x].",
    )  # fmt: skip
    p.add_argument("--checkpoint", metavar="PATH", default=str(DEFAULT_OUT / CHECKPOINT_NAME),
                   help="checkpoint (default %(default)s)")  # fmt: skip
    p.add_argument("--prompt", default="The object is a function.", help="text to look at")
    p.add_argument("--out", metavar="FILE.png", default="attention.png",
                   help="output PNG (default %(default)s)")  # fmt: skip
    p.set_defaults(run=cmd_attention)

    p = sub.add_parser(
        "seq2seq", help="EDTransformer (Algorithms 8, 11, 15) on sequence reversal",
        description="Train an EDTransformer on reversing random symbol sequences and report the "
        "exact-match accuracy of greedy Algorithm 15 on held-out sequences.",
    )  # fmt: skip
    p.add_argument("--symbols", type=int, default=10, help="alphabet size (default %(default)s)")
    p.add_argument("--max-len", type=int, default=8, help="longest sequence (default %(default)s)")
    p.add_argument(
        "--train-size", type=int, default=4000, help="training pairs (default %(default)s)"
    )
    p.add_argument(
        "--test-size", type=int, default=200, help="held-out pairs (default %(default)s)"
    )
    p.add_argument(
        "--examples", type=int, default=4, help="examples to print (default %(default)s)"
    )
    _model_options(p, d_e=64, layers=2, heads=4, steps=250, batch_size=64, lr=2e-3, warmup=25,
                   weight_decay=0.01)  # fmt: skip
    p.set_defaults(run=cmd_seq2seq)

    p = sub.add_parser(
        "mlm", help="ETransformer (Algorithms 9, 12) on masked characters",
        description="Train an ETransformer on masked-character prediction and report the "
        "recovery accuracy next to the most-frequent-character baseline.",
    )  # fmt: skip
    p.add_argument("--text", metavar="FILE", help="UTF-8 text file (default: pydoc_data/topics)")
    p.add_argument("--ell-max", type=int, default=16, help="context length (default %(default)s)")
    p.add_argument(
        "--p-mask", type=float, default=0.15, help="masking probability (default %(default)s)"
    )
    p.add_argument(
        "--test-size", type=int, default=512, help="held-out sequences (default %(default)s)"
    )
    _model_options(p, d_e=64, layers=2, heads=4, steps=1000, batch_size=64, lr=3e-3, warmup=100,
                   weight_decay=0.01)  # fmt: skip
    p.set_defaults(run=cmd_mlm)
    p = sub.add_parser(
        "benchmark", help="issue 9's benchmark: ours vs PyTorch / Hugging Face, side by side",
        description="Forward and AdamW training-step throughput against GPT2LMHeadModel and "
        "torch.nn.Transformer, cached vs literal Algorithm 14 vs transformers' generate, and "
        "GFLOP/s against the measured matmul peak, in one run (see docs/performance.md).",
    )  # fmt: skip
    from .benchmark import add_arguments  # argparse only; the heavy imports happen in run()

    add_arguments(p)
    p.set_defaults(run=cmd_benchmark)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None) -> int:
    """Entry point of ``formal-algorithms``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:  # FileNotFoundError is an OSError
        if os.environ.get("FORMAL_ALGORITHMS_TRACEBACK"):
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
