"""``formal-algorithms train``: tokenize a corpus, train a DTransformer (Algorithms 10, 13) with
AdamW, report held-out loss, write a checkpoint and a loss plot, print a sample (Algorithm 14).
The run (evaluations, checkpoints, resume, early stop) is :mod:`.runs`'s, shared with ``mlm`` and
``seq2seq``."""

from __future__ import annotations

import functools
import math
import shlex
import time

import jax
import numpy as np

from ..paper.functions import gelu
from ..paper.normalisation import EPS
from ..paper.parameters import init_d_transformer
from ..paper.tokenization import split_text
from .common import (
    CHECKPOINT_NAME,
    DEFAULT_OUT,
    PROG,
    check_prompt,
    duration,
    n_params,
    sample_key,
    say,
)
from .corpus import chunks, make_tokenizer, read_text, unigram_entropy
from .options import (
    MODEL_KEYS,
    integer,
    model_options,
    process_options,
    run_options,
    temperature,
)
from .runs import (
    BEST_NAME,
    Run,
    best_line,
    eval_interval,
    join,
    launch_processes,
    launching,
    run_config,
    run_text,
    start,
    train_run,
)
from .stream import stream_sample

DEFAULT_STEPS = 2400
HELD_OUT = 0.1  # the last tenth of the text is held out
CONFIG_KEYS = (*MODEL_KEYS, "ell_max", "tokenizer", "vocab_size", "text")


def run(args) -> int:
    if launching(args):  # --processes N: this command again, as N processes joined together
        return launch_processes(args)
    started = time.perf_counter()
    member = join(args)  # one of several processes: joined before any other JAX work
    resumed, out = start(args, "DTransformer", CONFIG_KEYS)
    text, source, text_sha256 = run_text(args, resumed)
    train_text, held_text = split_text(text, HELD_OUT)
    tokenizer = corpus_tokenizer(args, resumed, text, train_text)
    check_prompt(tokenizer, args.prompt)  # before training, not after it
    data = chunks(train_text, tokenizer, args.ell_max, "training")
    held = chunks(held_text, tokenizer, args.ell_max, "held-out")
    check_data(args, resumed, data, source)
    key_init, key_train, _ = jax.random.split(jax.random.key(args.seed), 3)
    args.d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_d_transformer(
        key_init,
        N_V=tokenizer.N_V,
        ell_max=args.ell_max,
        L=args.layers,
        H=args.heads,
        d_e=args.d_e,
        d_mlp=args.d_mlp,
    )
    describe(args, source, text, tokenizer, data, held, theta)
    config = run_config(args, CONFIG_KEYS)
    unigram = unigram_entropy(data)
    facts = dict(
        family="language model (Algorithms 10, 13, 14)",
        activation="gelu",
        eps=EPS,
        config=config,
        corpus=source,
        text_sha256=text_sha256,
        unigram_entropy=unigram,
    )
    writer = member is None or member.process_id == 0
    the_run = Run("train", out, facts, tokenizer.to_dict(), writer=writer)
    fitted = train_run(
        the_run,
        theta,
        data,
        functools.partial(held_out, held=held, args=args),
        key_train,
        args,
        resumed=resumed,
        member=member,
    )
    if not writer:  # process 0 of several reports, plots and samples
        return 0
    train_seconds = time.perf_counter() - started
    report(the_run, fitted, tokenizer, held, unigram)
    write_plot(the_run, fitted, unigram, source)
    final_sample(args, fitted.theta, tokenizer, out / CHECKPOINT_NAME)
    say(f"done in {duration(time.perf_counter() - started)} (training {duration(train_seconds)}).")
    say(
        f"more        {PROG} sample --checkpoint {shlex.quote(str(out / CHECKPOINT_NAME))} --prompt "
        f"{shlex.quote(suggest_prompt(train_text))}; {PROG} info {shlex.quote(str(out / CHECKPOINT_NAME))}"
    )
    return 0


def check_input(args) -> None:
    """``--ell-max`` against the text, before the memory estimate (which a long ``--ell-max``
    dominates) and before a BPE tokenizer is trained: the training text, n characters, makes
    n + 2 tokens with bos and eos with the character tokenizer, and at most its UTF-8 bytes + 2
    with byte-level BPE (whose exact count :func:`check_data` checks once it is tokenized)."""
    text, source = read_text(args.text)
    train_text = split_text(text, HELD_OUT)[0]
    if getattr(args, "tokenizer", "char") == "char":  # (mlm has no --tokenizer: characters)
        n = len(train_text)
        how = f"is {n:,} characters, {n + 2:,} tokens with bos and eos"
    else:
        n = len(train_text.encode("utf-8"))
        how = f"is {n:,} bytes, at most {n + 2:,} tokens with bos and eos"
    if args.ell_max > n + 2:
        refuse_ell_max(args.ell_max, n + 2, f"{training_part(source)} {how}")


def training_part(source: str) -> str:
    return f"the first {1 - HELD_OUT:.0%} of {source}, the training text,"


def refuse_ell_max(ell_max: int, longest: int, how: str):
    raise ValueError(
        f"--ell-max {ell_max} is longer than the text: {how}, so no training sequence would be "
        f"{ell_max} tokens long; give --ell-max at most {longest}"
    )


def check_data(args, resumed, data, source) -> None:
    """The training sequences as the trainer gets them (:func:`.corpus.chunks`) fill
    ``--ell-max`` (exactly, now that the text is tokenized) and at least one ``--batch-size``
    (else every step would be mostly empty rows). Not for a ``resumed`` run: it keeps its own
    sizes (``--batch-size`` given with ``--resume`` is refused), checked when it started."""
    if resumed is not None:
        return
    longest = max(len(c) for c in data)
    if longest < args.ell_max:
        refuse_ell_max(
            args.ell_max,
            longest,
            f"{training_part(source)} is {longest:,} tokens{tokenizer_words(args)} with bos "
            "and eos",
        )
    if args.batch_size > len(data):
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the {len(data):,} training "
            f"sequence{'s' * (len(data) != 1)} (of --ell-max {args.ell_max} tokens) in "
            f"{training_part(source)} so every step would be mostly empty rows; give "
            f"--batch-size at most {len(data)} (or a longer text, or a smaller --ell-max)"
        )


def tokenizer_words(args) -> str:
    """`` of --tokenizer NAME`` for the commands that have the option (``mlm`` has not)."""
    name = getattr(args, "tokenizer", None)
    return f" of --tokenizer {name}" if name else ""


def held_out(theta, *, held, args):
    from ..practice.trainer import evaluate

    return evaluate(theta, held, batch_size=args.batch_size)


def corpus_tokenizer(args, resumed, text, train_text):
    """The resumed run's tokenizer, or a new one of ``--tokenizer``."""
    if resumed is not None:
        from ..practice.bpe import tokenizer_from_dict

        return tokenizer_from_dict(resumed.tokenizer)
    return make_tokenizer(args.tokenizer, text, train_text, args.vocab_size)


def describe(args, source, text, tokenizer, data, held, theta) -> None:
    n_train = sum(len(c) - 1 for c in data)
    say(f"corpus      {source}: {len(text):,} characters, last 10% held out")
    say(
        f"tokenizer   {args.tokenizer}, N_V = {tokenizer.N_V} (mask, bos, eos = "
        f"{tokenizer.mask_token}, {tokenizer.bos_token}, {tokenizer.eos_token})"
    )
    say(
        f"data        {len(data):,} training sequences of ≤ {args.ell_max} tokens "
        f"({n_train:,} predicted tokens), {len(held):,} held out"
    )
    say(
        f"model       DTransformer (Algorithm 10): L = {args.layers}, H = {args.heads}, "
        f"d_e = {args.d_e}, d_mlp = {args.d_mlp}, ell_max = {args.ell_max}; "
        f"{n_params(theta) / 1e6:.2f} M parameters"
    )
    epochs = epoch_count(args.steps, len(data), args.batch_size)
    say(
        f"training    {args.steps} steps × {args.batch_size} sequences ({epochs}), AdamW lr "
        f"{args.lr:g}, warmup + cosine decay, clip 1.0; held-out evaluation every "
        f"{eval_interval(args)} steps (the first step compiles)"
    )


def report(run, fitted, tokenizer, held, unigram) -> None:
    """The held-out loss in nats per token and bits per character, against the unigram entropy."""
    final = fitted.evals[-1]
    n_chars = len(tokenizer.decode(np.concatenate(held)))
    bits_per_char = final["held_out_loss"] * final["n_targets"] / max(n_chars, 1) / math.log(2)
    say(
        f"held-out    loss {final['held_out_loss']:.3f} nats/token ({bits_per_char:.2f} bits/char),"
        f" next-token accuracy {final['accuracy']:.1%}; unigram entropy {unigram:.3f} nats/token"
    )
    if final["held_out_loss"] >= unigram:
        why = (
            "it has memorised its training text (training loss "
            f"{final['train_loss']:.3f}): try fewer --steps, a smaller model or a larger --text"
            if final["train_loss"] < unigram
            else "it is undertrained: give it more --steps"
        )
        say(
            f"warning     the held-out loss is no better than the unigram entropy, i.e. than "
            f"predicting from the token frequencies alone; {why}"
        )
    line = best_line(run, fitted.evals)
    if line:
        say(line)


def write_plot(run, fitted, unigram, source) -> None:
    from ..visualise import plot_loss

    evals = fitted.evals
    png = plot_loss(
        fitted.history,
        run.out / "loss.png",
        held_out=evals[-1]["held_out_loss"],
        unigram=unigram,
        held_out_curve=([e["step"] for e in evals], [e["held_out_loss"] for e in evals]),
        title=f"DTransformer on {source.split(' (')[0]}",
    )
    say(
        f"wrote       {run.out / CHECKPOINT_NAME} "
        f"({'stopped early' if fitted.stopped else 'step ' + str(fitted.step)}), "
        f"{run.out / BEST_NAME} and {png}"
    )


def final_sample(args, theta, tokenizer, path) -> None:
    """Algorithm 14's sample of the trained model, and the command that repeats it."""
    tau = args.temperature
    say(f"sample      (Algorithm 14, τ = {tau:g}, {args.sample_length} tokens, seed {args.seed}):")
    say("-" * 78)
    stream_sample(
        theta, tokenizer, args.prompt, sample_key(args.seed), args.sample_length, tau, gelu, EPS
    )
    say("-" * 78)
    again = [
        PROG,
        "sample",
        "--checkpoint",
        str(path),
        "--seed",
        str(args.seed),
        "--length",
        str(args.sample_length),
        "--temperature",
        f"{tau:g}",
    ]
    if args.prompt:
        again += ["--prompt", args.prompt]
    say(f"again       {shlex.join(again)}")


def epoch_count(steps: int, n_sequences: int, batch_size: int) -> str:
    """How many passes over the data ``steps`` make, as the trainer takes them: an epoch is
    ``ceil(N / batch_size)`` steps (its last batch may be short), e.g. "3 epochs", "2.5 epochs"."""
    per_epoch = math.ceil(n_sequences / batch_size)
    epochs = steps / per_epoch
    text = f"{epochs:.0f}" if epochs == int(epochs) else f"{epochs:.1f}"
    return f"{text} epoch{'' if text == '1' else 's'} of {per_epoch} steps"


def suggest_prompt(text: str) -> str:
    """A prompt that the corpus itself suggests: the most frequent first word of its lines (a
    word of letters, followed by the character that follows it there), or its first character."""
    counts = {}
    for line in text.splitlines():
        stripped = line.lstrip()
        word = ""
        for c in stripped:
            if not c.isalpha():
                break
            word += c
        if 2 <= len(word) < len(stripped):
            key = stripped[: len(word) + 1]
            counts[key] = counts.get(key, 0) + 1
    if counts:
        return max(counts, key=lambda k: (counts[k], -text.find(k)))
    return text.strip()[:1] or text[:1]


def register(sub) -> None:
    """Add the ``train`` command to the parser's subcommands."""
    p = sub.add_parser(
        "train",
        help="train a DTransformer (Algorithm 10) on text, then sample from it",
        description="Tokenize a corpus (default: Python's own pydoc help texts), train a "
        "DTransformer (Algorithms 10, 13) with AdamW, report held-out loss, write a checkpoint "
        "and a loss plot to --out, print a sample (Algorithm 14). About 3 minutes on 2 CPU cores.",
    )
    p.add_argument("--text", metavar="FILE", help="UTF-8 text file (default: pydoc_data/topics)")
    p.add_argument(
        "--tokenizer",
        choices=("char", "bpe"),
        default="char",
        help="character level (default) or byte-level BPE trained on the text",
    )
    p.add_argument(
        "--vocab-size",
        type=integer(1),
        default=512,
        help="BPE vocabulary size N_V, specials included (default %(default)s)",
    )
    p.add_argument(
        "--ell-max", type=integer(2), default=64, help="context length (default %(default)s)"
    )
    model_options(
        p,
        d_e=96,
        layers=3,
        heads=3,
        steps=DEFAULT_STEPS,
        batch_size=16,
        lr=3e-3,
        warmup=100,
        weight_decay=0.1,
    )
    run_options(p, DEFAULT_OUT)
    process_options(p)
    p.add_argument("--prompt", default="", help="prompt of the final sample (default: none)")
    p.add_argument(
        "--sample-length",
        type=integer(1),
        default=300,
        help="tokens in the final sample (default %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=temperature,
        default=0.8,
        help="sampling temperature τ (default %(default)s; 0 = argmax)",
    )
    p.set_defaults(run=run, check_input=check_input)
