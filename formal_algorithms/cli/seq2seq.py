"""``formal-algorithms seq2seq``: an EDTransformer (Algorithms 8, 11, 15) learns to reverse
sequences; greedy cached Algorithm 15 is scored by exact match on held-out sequences. The run
(evaluations, checkpoints, resume, early stop) is :mod:`.runs`'s, shared with ``train`` and
``mlm``."""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import numpy as np

from ..paper.parameters import init_ed_transformer
from ..practice.cache import ed_inference_cached_batch
from .common import PROG, duration, n_params, say
from .options import MODEL_KEYS, integer, model_options, run_options
from .runs import Run, best_line, eval_interval, run_config, start, train_run

FAMILY = "sequence reversal (Algorithms 8, 11, 15)"
CONFIG_KEYS = (*MODEL_KEYS, "symbols", "max_len", "train_size", "test_size")


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


def check_examples(args) -> None:
    """``--examples`` typed beyond ``--test-size`` (before any work: only test_size can be shown);
    the default prints the pairs there are."""
    if "--examples" in getattr(args, "given", ()) and args.examples > args.test_size:
        raise ValueError(
            f"--examples {args.examples} is more than the {args.test_size} held-out pairs "
            "(--test-size)"
        )


def run(args) -> int:
    started = time.perf_counter()
    check_examples(args)
    resumed, out = start(args, "EDTransformer", CONFIG_KEYS)
    rng = np.random.default_rng(args.seed)
    n_sym, max_len = args.symbols, args.max_len
    train_pairs, seen = reversal_pairs(rng, args.train_size, n_sym, max_len)
    test_pairs, _ = reversal_pairs(rng, args.test_size, n_sym, max_len, exclude=seen)
    key_init, key_train, key_gen = jax.random.split(jax.random.key(args.seed), 3)
    args.d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_ed_transformer(
        key_init,
        N_V=n_sym + 3,
        ell_max=max_len + 2,
        L_enc=args.layers,
        L_dec=args.layers,
        H=args.heads,
        d_e=args.d_e,
        d_mlp=args.d_mlp,
    )
    say(
        f"task        reverse a sequence of 1-{max_len} symbols from {n_sym}: "
        f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs"
    )
    say(
        f"model       EDTransformer (Algorithm 8): L_enc = L_dec = {args.layers}, H = "
        f"{args.heads}, d_e = {args.d_e}, d_mlp = {args.d_mlp}; {n_params(theta) / 1e6:.2f} M "
        f"parameters; training: Algorithm 11's loss, {args.steps} AdamW steps, held-out "
        f"evaluation every {eval_interval(args)}"
    )
    config = run_config(args, CONFIG_KEYS)
    facts = dict(
        family=FAMILY,
        activation="relu",
        config=config,
        task=f"reverse a sequence of 1-{max_len} symbols 0-{n_sym - 1}",
    )
    the_run = Run("seq2seq", out, facts)
    evaluate = functools.partial(held_out, pairs=test_pairs, args=args)
    fitted = train_run(the_run, theta, train_pairs, evaluate, key_train, args, resumed=resumed)
    correct, x_hats = exact_matches(fitted.theta, test_pairs, key_gen)
    accuracy = float(np.mean(correct))
    say(
        f"held-out    exact-match accuracy {accuracy:.1%} ({sum(correct)}/{len(correct)}) "
        f"of Algorithm 15 (cached, τ = 0); loss {fitted.evals[-1]['held_out_loss']:.3f} "
        f"nats/token; final training loss {fitted.history[-1]:.3f}"
    )
    line = best_line(the_run, fitted.evals)
    if line:
        say(line)
    show_examples(x_hats, test_pairs, correct, n_sym, max_len, args.examples)
    path = the_run.finish(fitted, accuracy=accuracy, final_training_loss=float(fitted.history[-1]))
    example = " ".join(str(v) for v in range(min(n_sym, max_len, 4)))
    say(f"wrote       {path}; try: {PROG} sample --checkpoint {path} --prompt '{example}'")
    say(f"done in {duration(time.perf_counter() - started)}")
    return 0


def held_out(theta, *, pairs, args):
    """Algorithm 11's held-out loss and next-token accuracy (teacher forcing)."""
    from ..practice.trainer import evaluate

    return evaluate(theta, pairs, batch_size=args.batch_size)


def exact_matches(theta, pairs, key):
    """Greedy cached Algorithm 15 on every held-out z: whether it gives exactly x, and what it gave."""
    contexts = [z for z, _ in pairs]
    x_hats = ed_inference_cached_batch(contexts, theta, jax.random.split(key, len(contexts)), tau=0)
    correct = [np.array_equal(np.asarray(xh), x) for xh, (_, x) in zip(x_hats, pairs, strict=True)]
    return correct, x_hats


def show_examples(x_hats, pairs, correct, n_sym, max_len, n) -> None:
    def show(tokens):
        names = {n_sym + 1: "<bos>", n_sym + 2: "<eos>", n_sym: "<mask>"}
        return " ".join(names.get(int(t), str(int(t))) for t in tokens)

    for xh, (z, x), ok in list(zip(x_hats, pairs, correct, strict=True))[:n]:
        say(
            f"  z = {show(z):<{2 * max_len}} → x̂ = {show(xh)}  {'✓' if ok else '✗ want ' + show(x)}"
        )


def register(sub) -> None:
    """Add the ``seq2seq`` command to the parser's subcommands."""
    p = sub.add_parser(
        "seq2seq",
        help="EDTransformer (Algorithms 8, 11, 15) on sequence reversal",
        description="Train an EDTransformer on reversing random symbol sequences and report the "
        "exact-match accuracy of greedy Algorithm 15 on held-out sequences.",
    )
    p.add_argument(
        "--symbols", type=integer(1), default=10, help="alphabet size (default %(default)s)"
    )
    p.add_argument(
        "--max-len", type=integer(1), default=8, help="longest sequence (default %(default)s)"
    )
    p.add_argument(
        "--train-size", type=integer(1), default=4000, help="training pairs (default %(default)s)"
    )
    p.add_argument(
        "--test-size", type=integer(1), default=200, help="held-out pairs (default %(default)s)"
    )
    p.add_argument(
        "--examples", type=integer(0), default=4, help="examples to print (default %(default)s)"
    )
    model_options(
        p,
        d_e=64,
        layers=2,
        heads=4,
        steps=250,
        batch_size=64,
        lr=2e-3,
        warmup=25,
        weight_decay=0.01,
    )
    run_options(p, pathlib.Path("runs") / "seq2seq")
    p.set_defaults(run=run)
