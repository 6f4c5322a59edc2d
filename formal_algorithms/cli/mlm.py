"""``formal-algorithms mlm``: an ETransformer (Algorithms 9, 12) learns to recover masked
characters, scored against the most-frequent-character baseline. The run (evaluations,
checkpoints, resume, early stop) is :mod:`.runs`'s, shared with ``train`` and ``seq2seq``."""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import e_transformer_logits
from ..paper.parameters import init_e_transformer
from ..paper.tokenization import CharTokenizer, split_text
from .common import CHECKPOINT_NAME, PROG, duration, n_params, say
from .corpus import chunks
from .options import MODEL_KEYS, integer, model_options, probability, run_options
from .runs import Run, best_line, eval_interval, run_config, run_text, start, train_run
from .train import HELD_OUT, check_data, check_input

FAMILY = "masked-character model (Algorithms 9, 12)"
CONFIG_KEYS = (*MODEL_KEYS, "ell_max", "p_mask", "test_size", "text")


def run(args) -> int:
    started = time.perf_counter()
    resumed, out = start(args, "ETransformer", CONFIG_KEYS)
    text, source, text_sha256 = run_text(args, resumed)
    train_text, held_text = split_text(text, HELD_OUT)
    tokenizer = CharTokenizer.from_text(text)
    data = chunks(train_text, tokenizer, args.ell_max, "training")
    check_data(args, resumed, data, source)  # --ell-max and --batch-size against the text
    held = chunks(held_text, tokenizer, args.ell_max, "held-out")[: args.test_size]
    key_init, key_train, key_eval = jax.random.split(jax.random.key(args.seed), 3)
    args.d_mlp = args.d_mlp or 4 * args.d_e
    hp = dict(L=args.layers, H=args.heads, d_e=args.d_e, d_mlp=args.d_mlp)
    theta = init_e_transformer(key_init, N_V=tokenizer.N_V, ell_max=args.ell_max, **hp)
    say(
        f"corpus      {source}: {len(data)} training sequences of ≤ {args.ell_max} characters, "
        f"{len(held)} held out; p_mask = {args.p_mask}"
    )
    say(
        f"model       ETransformer (Algorithm 9): L = {args.layers}, H = {args.heads}, "
        f"d_e = {args.d_e}, d_mlp = {args.d_mlp}; {n_params(theta) / 1e6:.2f} M parameters; "
        f"training: Algorithm 12's loss, {args.steps} AdamW steps, held-out evaluation every "
        f"{eval_interval(args)}"
    )
    masks = held_out_masks(key_eval, held, args)
    guess, baseline = most_frequent_baseline(data, held, masks, tokenizer)
    config = run_config(args, CONFIG_KEYS)
    task = f"recover masked characters (p_mask = {args.p_mask})"
    facts = dict(family=FAMILY, activation="gelu", corpus=source, text_sha256=text_sha256)
    facts.update(task=task, config=config, baseline=baseline)
    the_run = Run("mlm", out, facts, tokenizer.to_dict())
    evaluate = functools.partial(held_out, held=held, key=key_eval, args=args)
    fitted = train_run(
        the_run, theta, data, evaluate, key_train, args, resumed=resumed, p_mask=args.p_mask
    )
    final = fitted.evals[-1]
    say(
        f"held-out    masked-character recovery accuracy {final['accuracy']:.1%} on "
        f"{final['n_targets']} masked characters; baseline (always {tokenizer.decode([guess])!r}) "
        f"{baseline:.1%}; loss {final['held_out_loss']:.3f} nats/char"
    )
    line = best_line(the_run, fitted.evals)
    if line:
        say(line)
    show_example(fitted.theta, held, masks, tokenizer, args.ell_max)
    path = out / CHECKPOINT_NAME
    say(
        f"wrote       {path}; try: {PROG} sample --checkpoint {path} --prompt 'th_ _ord' "
        "(_ = a masked character)"
    )
    say(f"done in {duration(time.perf_counter() - started)}")
    return 0


def held_out(theta, *, held, key, args):
    """Algorithm 12's held-out loss and recovery accuracy, the same masks at every evaluation."""
    from ..practice.trainer import evaluate

    return evaluate(theta, held, key, batch_size=args.batch_size, p_mask=args.p_mask)


def held_out_masks(key, held, args):
    """The masks the evaluation draws (``evaluate``'s: sequence n masked with split(key, N)[n])."""
    from ..paper.training import draw_mask

    keys = jax.random.split(key, len(held))
    return [
        np.asarray(draw_mask(k, len(x), args.p_mask, args.ell_max))
        for k, x in zip(keys, held, strict=True)
    ]


def most_frequent_baseline(data, held, masks, tokenizer):
    """The accuracy, on the very same masked positions, of always guessing the training text's
    most frequent character."""
    counts = np.bincount(np.concatenate(data), minlength=tokenizer.N_V)
    counts[tokenizer.bos_token] = counts[tokenizer.eos_token] = 0
    guess = int(np.argmax(counts))
    hits = sum(int(np.sum(x[m] == guess)) for x, m in zip(held, masks, strict=True))
    total = sum(int(m.sum()) for m in masks)
    return guess, hits / max(total, 1)


def show_example(theta, held, masks, tokenizer, ell_max) -> None:
    """The first held-out sequences (without their bos) as text, masked and filled, one line each."""
    logits_fn = jax.jit(e_transformer_logits)
    text, masked_text, filled = [], [], []
    for x, masked in list(zip(held, masks, strict=True))[: max(1, 72 // ell_max)]:
        x_tilde = np.where(masked, tokenizer.mask_token, x)
        guess_x = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_tilde), theta), axis=0))
        for t in range(1, len(x)):  # position 0 is bos
            c = tokenizer.decode([x[t]], special="show")
            text.append(c)
            masked_text.append("_" if masked[t] else c)
            filled.append(tokenizer.decode([guess_x[t]], special="show") if masked[t] else c)
    for name, chars in (("text  ", text), ("masked", masked_text), ("filled", filled)):
        say(f"  {name} " + "".join(chars).replace("\n", "⏎"))


def register(sub) -> None:
    """Add the ``mlm`` command to the parser's subcommands."""
    p = sub.add_parser(
        "mlm",
        help="ETransformer (Algorithms 9, 12) on masked characters",
        description="Train an ETransformer on masked-character prediction and report the "
        "recovery accuracy next to the most-frequent-character baseline.",
    )
    p.add_argument("--text", metavar="FILE", help="UTF-8 text file (default: pydoc_data/topics)")
    p.add_argument(
        "--ell-max", type=integer(2), default=16, help="context length (default %(default)s)"
    )
    p.add_argument(
        "--p-mask", type=probability, default=0.15, help="masking probability (default %(default)s)"
    )
    p.add_argument(
        "--test-size", type=integer(1), default=512, help="held-out sequences (default %(default)s)"
    )
    model_options(
        p,
        d_e=64,
        layers=2,
        heads=4,
        steps=1000,
        batch_size=64,
        lr=3e-3,
        warmup=100,
        weight_decay=0.01,
    )
    run_options(p, pathlib.Path("runs") / "mlm")
    p.set_defaults(run=run, check_input=check_input)
