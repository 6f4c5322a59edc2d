"""``formal-algorithms train``: tokenize a corpus, train a DTransformer (Algorithms 10, 13) with
AdamW, report held-out loss, write a checkpoint and a loss plot, print a sample (Algorithm 14)."""

from __future__ import annotations

import functools
import hashlib
import math
import pathlib
import shlex
import sys
import time

import jax
import numpy as np

from ..paper.functions import gelu
from ..paper.inference import check_tau
from ..paper.normalisation import EPS
from ..paper.parameters import init_d_transformer
from ..paper.tokenization import split_text
from ..practice.checkpoint import load_checkpoint, save_checkpoint
from .common import (
    CHECKPOINT_NAME,
    DEFAULT_OUT,
    PROG,
    check_positive,
    check_prompt,
    chunks,
    duration,
    make_tokenizer,
    model_options,
    n_params,
    progress_callback,
    read_text,
    sample_key,
    say,
    stop_run,
    unigram_entropy,
)
from .stream import stream_sample


def run(args) -> int:
    check_positive(args, "batch_size", "d_e", "layers", "heads", "sample_length", "eval_every",
                   "early_stop")  # fmt: skip
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.ell_max < 2:
        raise ValueError(f"--ell-max must be at least 2, got {args.ell_max}")
    tau = check_tau("--temperature", args.temperature)
    started = time.perf_counter()
    resumed = None
    if args.resume:
        resumed, out = load_run(args)
    else:
        args.steps = DEFAULT_STEPS if args.steps is None else args.steps
        out = prepare_out_dir(pathlib.Path(args.out), force=args.force)
    text, source = read_text(args.text)
    text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if resumed is not None and resumed.extra.get("text_sha256") not in (None, text_sha256):
        raise ValueError(
            f"--resume {args.resume!r}: the corpus {source} is not the text this run was "
            "trained on (its SHA-256 differs)"
        )
    train_text, held_text = split_text(text, 0.1)
    if resumed is not None:
        from ..practice.bpe import tokenizer_from_dict

        tokenizer = tokenizer_from_dict(resumed.tokenizer)
    else:
        tokenizer = make_tokenizer(args.tokenizer, text, train_text, args.vocab_size)
    check_prompt(tokenizer, args.prompt)  # before training, not after it
    data = chunks(train_text, tokenizer, args.ell_max, "training")
    held = chunks(held_text, tokenizer, args.ell_max, "held-out")
    n_train = sum(len(c) - 1 for c in data)
    say(f"corpus      {source}: {len(text):,} characters, last 10% held out")
    say(f"tokenizer   {args.tokenizer}, N_V = {tokenizer.N_V} (mask, bos, eos = "
         f"{tokenizer.mask_token}, {tokenizer.bos_token}, {tokenizer.eos_token})")  # fmt: skip
    say(f"data        {len(data):,} training sequences of ≤ {args.ell_max} tokens "
         f"({n_train:,} predicted tokens), {len(held):,} held out")  # fmt: skip

    key_init, key_train, _ = jax.random.split(jax.random.key(args.seed), 3)
    d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_d_transformer(key_init, N_V=tokenizer.N_V, ell_max=args.ell_max, L=args.layers,
                               H=args.heads, d_e=args.d_e, d_mlp=d_mlp)  # fmt: skip
    say(f"model       DTransformer (Algorithm 10): L = {args.layers}, H = {args.heads}, "
         f"d_e = {args.d_e}, d_mlp = {d_mlp}, ell_max = {args.ell_max}; "
         f"{n_params(theta) / 1e6:.2f} M parameters")  # fmt: skip
    epochs = epoch_count(args.steps, len(data), args.batch_size)
    # a tenth of the run, but not more often than every 50 steps (each evaluation reads the whole
    # held-out text) nor less often than every 250; a run of up to 50 steps is evaluated at its end
    eval_every = args.eval_every or min(args.steps, max(50, min(250, args.steps // 10)))
    say(f"training    {args.steps} steps × {args.batch_size} sequences ({epochs}), AdamW lr "
        f"{args.lr:g}, warmup + cosine decay, clip 1.0; held-out evaluation every {eval_every} "
        "steps (the first step compiles)")  # fmt: skip

    optimizer = make_optimizer(args.lr, args.steps, min(args.warmup, args.steps // 2),
                               args.weight_decay)  # fmt: skip
    unigram = unigram_entropy(data)
    config = {k: getattr(args, k) for k in CONFIG_KEYS}
    config.update(d_mlp=d_mlp, eval_every=eval_every, early_stop=args.early_stop)
    record = dict(tokenizer=tokenizer.to_dict(), config=config, corpus=source,
                  text_sha256=text_sha256, unigram_entropy=unigram, evals=[])  # fmt: skip
    if resumed is None:
        opt_state, step, history = optimizer.init(theta), 0, np.zeros(0, np.float32)
    else:
        resumed = load_checkpoint(out / CHECKPOINT_NAME, opt_state_template=optimizer.init(theta))
        theta, opt_state = resumed.theta, resumed.opt_state
        step = int(resumed.extra["step"])
        history = np.asarray(resumed.arrays["loss_history"], np.float32)
        record["evals"] = list(resumed.extra.get("evals", []))
        say(f"resumed     {out / CHECKPOINT_NAME} at step {step} of {args.steps}")
    theta, opt_state, history, step, stopped = train_and_evaluate(
        theta, opt_state, data, held, key_train, optimizer, args, out, record, step=step,
        history=history, eval_every=eval_every,
    )  # fmt: skip
    train_seconds = time.perf_counter() - started

    final = record["evals"][-1]
    n_chars = len(tokenizer.decode(np.concatenate(held)))
    bits_per_char = final["held_out_loss"] * final["n_targets"] / max(n_chars, 1) / math.log(2)
    say(f"held-out    loss {final['held_out_loss']:.3f} nats/token ({bits_per_char:.2f} bits/char),"
        f" next-token accuracy {final['accuracy']:.1%}; unigram entropy {unigram:.3f} nats/token")  # fmt: skip
    if final["held_out_loss"] >= unigram:
        why = (
            "it has memorised its training text (training loss "
            f"{final['train_loss']:.3f}): try fewer --steps, a smaller model or a larger --text"
            if final["train_loss"] < unigram
            else "it is undertrained: give it more --steps"
        )
        say(f"warning     the held-out loss is no better than the unigram entropy, i.e. than "
            f"predicting from the token frequencies alone; {why}")  # fmt: skip
    best = min(record["evals"], key=lambda e: e["held_out_loss"])
    if best["step"] != final["step"]:
        say(f"best        step {best['step']}: held-out loss {best['held_out_loss']:.3f}, kept in "
            f"{out / BEST_NAME}")  # fmt: skip

    from ..visualise import plot_loss

    path = out / CHECKPOINT_NAME
    png = plot_loss(history, out / "loss.png", held_out=final["held_out_loss"], unigram=unigram,
                    held_out_curve=([e["step"] for e in record["evals"]],
                                    [e["held_out_loss"] for e in record["evals"]]),
                    title=f"DTransformer on {source.split(' (')[0]}")  # fmt: skip
    say(f"wrote       {path} ({'stopped early' if stopped else 'step ' + str(step)}), "
        f"{out / BEST_NAME} and {png}")  # fmt: skip
    say(f"sample      (Algorithm 14, τ = {tau:g}, {args.sample_length} tokens, seed {args.seed}):")
    say("-" * 78)
    stream_sample(theta, tokenizer, args.prompt, sample_key(args.seed), args.sample_length, tau,
                  gelu, EPS)  # fmt: skip
    say("-" * 78)
    again = [PROG, "sample", "--checkpoint", str(path), "--seed", str(args.seed), "--length",
             str(args.sample_length), "--temperature", f"{tau:g}"]  # fmt: skip
    if args.prompt:
        again += ["--prompt", args.prompt]
    say(f"done in {duration(time.perf_counter() - started)} (training {duration(train_seconds)}).")
    say(f"again       {shlex.join(again)}")
    say(f"more        {PROG} sample --checkpoint {shlex.quote(str(path))} --prompt "
        f"{shlex.quote(suggest_prompt(train_text))}; {PROG} info {shlex.quote(str(path))}")  # fmt: skip
    return 0


# ---------------------------------------------------------------------------- the training run

DEFAULT_STEPS = 2400
BEST_NAME = "best.safetensors"
CONFIG_KEYS = ("steps", "batch_size", "ell_max", "d_e", "layers", "heads", "d_mlp", "lr",
               "warmup", "weight_decay", "seed", "tokenizer", "vocab_size", "text")  # fmt: skip


@functools.lru_cache(maxsize=8)
def make_optimizer(lr, steps, warmup, weight_decay):
    """The trainer's AdamW with warmup + cosine decay and clipping at 1.0; one object per setting
    in a process, so that a run resumed in the same process reuses the compiled step."""
    from ..practice.trainer import make_optimizer

    return make_optimizer(lr, N_steps=steps, warmup_steps=warmup, weight_decay=weight_decay,
                          clip_norm=1.0)  # fmt: skip


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


def prepare_out_dir(out: pathlib.Path, *, force: bool) -> pathlib.Path:
    """``out``, unless it holds a run (a checkpoint) and ``force`` is off: then the first free
    ``out-2``, ``out-3``, …, announced. With ``force`` an old run's files are replaced."""
    if not (out / CHECKPOINT_NAME).exists():
        return out
    if force:
        (out / BEST_NAME).unlink(missing_ok=True)
        say(f"note        --force: replacing the run in {out}")
        return out
    n = 2
    while (out.with_name(f"{out.name}-{n}") / CHECKPOINT_NAME).exists():
        n += 1
    new = out.with_name(f"{out.name}-{n}")
    say(f"note        {out} holds a run; writing to {new} (--force replaces it, --resume {out} "
        "continues it)")  # fmt: skip
    return new


def load_run(args):
    """``--resume DIR``: the run's checkpoint and directory; its configuration replaces the model,
    data and optimiser options (``--steps N`` beyond the run's own extends it)."""
    out = pathlib.Path(args.resume)
    path = out / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"--resume {args.resume!r}: there is no {CHECKPOINT_NAME} in it")
    checkpoint = load_checkpoint(path)
    config = checkpoint.extra.get("config")
    if checkpoint.architecture != "DTransformer" or not config or "step" not in checkpoint.extra:
        raise ValueError(f"--resume {args.resume!r}: {path} is not a run written by '{PROG} train'")
    if checkpoint.extra.get("opt_state_saved") is False:
        raise ValueError(f"--resume {args.resume!r}: {path} has no optimizer state to resume")
    steps = args.steps
    for k in CONFIG_KEYS:
        setattr(args, k, config[k])
    for k in ("eval_every", "early_stop"):  # the run's own unless given now
        if getattr(args, k) is None:
            setattr(args, k, config.get(k))
    done = int(checkpoint.extra["step"])
    if steps is not None and steps != config["steps"]:
        if steps <= done:
            raise ValueError(f"--steps {steps}: the run in {out} is at step {done} already")
        say(f"note        --steps {steps}: the learning-rate schedule is stretched from "
            f"{config['steps']} to {steps} steps")  # fmt: skip
        args.steps = steps
    elif done >= config["steps"]:
        raise ValueError(
            f"--resume {args.resume!r}: the run finished all its {done} steps; give --steps N "
            f"(N > {done}) to train it longer"
        )
    return checkpoint, out


def save_run_checkpoint(path, theta, opt_state, record, *, step, history, status):
    """The one checkpoint of a ``train`` run, for the periodic evaluations, the best one, the end
    and an interruption alike: θ, the tokenizer, the optimizer state (``None``: not resumable, as
    the best checkpoint), the step reached, the per-step training losses and every evaluation so
    far; ``status`` is "in progress", "finished", "stopped early" or "interrupted". ``record``: the
    run's fixed facts (tokenizer, config, corpus, text_sha256, unigram_entropy, evals)."""
    evals = record["evals"]
    extra = {
        "family": "language model (Algorithms 10, 13, 14)", "activation": "gelu", "eps": EPS,
        "config": record["config"], "corpus": record["corpus"],
        "text_sha256": record["text_sha256"], "unigram_entropy": record["unigram_entropy"],
        "step": step, "status": status, "evals": evals,
        "held_out_loss": evals[-1]["held_out_loss"] if evals else None,
        "opt_state_saved": opt_state is not None,
    }  # fmt: skip
    return save_checkpoint(path, theta, tokenizer=record["tokenizer"], opt_state=opt_state,
                           extra=extra, arrays={"loss_history": np.asarray(history, np.float32)})  # fmt: skip


def overfitting_warning(evals) -> str | None:
    """The warning for the last of ``evals`` (dicts with ``step``, ``train_loss`` the mean
    training loss since the evaluation before, ``held_out_loss``), or ``None``: held-out loss
    rising while training loss falls is the mark of a model memorising its training text."""
    if len(evals) < 2:
        return None
    a, b = evals[-2], evals[-1]
    if b["held_out_loss"] > a["held_out_loss"] and b["train_loss"] < a["train_loss"]:
        return (
            f"held-out loss rose {a['held_out_loss']:.3f} → {b['held_out_loss']:.3f} while the "
            f"training loss fell {a['train_loss']:.3f} → {b['train_loss']:.3f} (steps "
            f"{a['step']} → {b['step']}): the model is memorising the training text (overfitting)"
        )
    return None


def should_stop(evals, patience: int | None) -> bool:
    """``--early-stop N``: the last ``N`` evaluations all failed to improve on the best before."""
    if not patience or len(evals) <= patience:
        return False
    best_before = min(e["held_out_loss"] for e in evals[:-patience])
    return all(e["held_out_loss"] >= best_before for e in evals[-patience:])


def train_and_evaluate(theta, opt_state, data, held, key, optimizer, args, out, record, *, step,
                       history, eval_every):  # fmt: skip
    """Train from ``step`` to ``args.steps`` in segments of ``eval_every`` steps (the trainer's
    resumption, so the parameters equal one uninterrupted run's); after each segment: evaluate on
    the held-out data, write the run's checkpoint (and the best one), warn about overfitting, stop
    early if asked. Returns ``(θ, opt_state, history, step, stopped_early)``."""
    from ..practice.trainer import NonFiniteError, TrainingInterrupted, evaluate, train

    evals = record["evals"]
    bar, callback = progress_callback(args.steps, "train", initial=step)
    stopped = warned = False
    try:
        while step < args.steps:
            end = min(args.steps, (step // eval_every + 1) * eval_every)
            theta, losses, opt_state = train(
                theta, data, key, optimizer=optimizer, N_steps=end, batch_size=args.batch_size,
                callback=callback, fast=True, opt_state=opt_state, start_step=step,
                return_opt_state=True,
            )  # fmt: skip
            history = np.concatenate([history, np.asarray(losses, np.float32)])
            step = end
            paused = time.perf_counter()
            result = evaluate(theta, held, batch_size=args.batch_size)
            evals.append(dict(step=step, train_loss=float(np.mean(losses)),
                              held_out_loss=float(result.loss), accuracy=float(result.accuracy),
                              n_targets=int(result.n_targets)))  # fmt: skip
            best = min(e["held_out_loss"] for e in evals)
            stopped = should_stop(evals, args.early_stop)
            status = (
                "finished" if step >= args.steps else "stopped early" if stopped else "in progress"
            )
            save_run_checkpoint(out / CHECKPOINT_NAME, theta, opt_state, record, step=step,
                                history=history, status=status)  # fmt: skip
            if evals[-1]["held_out_loss"] <= best:
                save_run_checkpoint(out / BEST_NAME, theta, None, record, step=step,
                                    history=history, status=status)  # fmt: skip
            bar.write(f"eval        step {step}: held-out loss {result.loss:.3f}, training loss "
                      f"{evals[-1]['train_loss']:.3f}" + (" (best)" if evals[-1]["held_out_loss"]
                      <= best else ""), file=sys.stdout)  # fmt: skip
            warning = overfitting_warning(evals)
            if warning and warned:  # said in full once; then one line
                b = evals[-1]
                bar.write(f"warning     held-out loss rose again, to {b['held_out_loss']:.3f} "
                          f"(training loss {b['train_loss']:.3f})", file=sys.stdout)  # fmt: skip
            elif warning:
                warned = True
                bar.write(f"warning     {warning}; the best checkpoint is kept in "
                          f"{out / BEST_NAME}" + ("" if args.early_stop else
                          "; --early-stop N stops after N evaluations without improvement"),
                          file=sys.stdout)  # fmt: skip
            if stopped:
                bar.write(f"early stop  no improvement in the last {args.early_stop} "
                          f"evaluations (--early-stop {args.early_stop})", file=sys.stdout)  # fmt: skip
                break
            callback.exclude(time.perf_counter() - paused)  # the rate and ETA count steps only
    except (NonFiniteError, KeyboardInterrupt) as error:  # save the last good state (issue 18)
        if not isinstance(error, (NonFiniteError, TrainingInterrupted)):  # Ctrl-C between steps
            error = TrainingInterrupted("", completed=step, theta=theta, opt_state=opt_state,
                                        history=np.zeros(0, np.float32))  # fmt: skip
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "diverged"
        done = np.concatenate([history, np.asarray(error.history, np.float32)])

        def save(theta, opt_state, completed, _):
            return save_run_checkpoint(out / CHECKPOINT_NAME, theta, opt_state, record,
                                       step=completed, history=done, status=status)  # fmt: skip

        raise stop_run(error, save, f"continue with: {PROG} train --resume {out}") from None
    finally:
        bar.close()
    return theta, opt_state, history, step, stopped


def register(sub) -> None:
    """Add the ``train`` command to the parser's subcommands."""
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
    model_options(p, d_e=96, layers=3, heads=3, steps=None, batch_size=16, lr=3e-3, warmup=100,
                  weight_decay=0.1, steps_help=f"optimiser steps (default {DEFAULT_STEPS}; with "
                  "--resume: the run's own, a larger number trains it longer)")  # fmt: skip
    p.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="evaluate on the held-out text every N steps and write a checkpoint "
                   "(default: a tenth of --steps, between 50 and 250)")  # fmt: skip
    p.add_argument("--early-stop", type=int, default=None, metavar="N",
                   help="stop when N evaluations in a row do not improve the best held-out loss "
                   "(default: never)")  # fmt: skip
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run in DIR (its model.safetensors) with its own settings")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="replace the run in --out (default: a new directory --out-2, -3, ...)")  # fmt: skip
    p.add_argument("--prompt", default="", help="prompt of the final sample (default: none)")
    p.add_argument("--sample-length", type=int, default=300,
                   help="tokens in the final sample (default %(default)s)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature τ (default %(default)s; 0 = argmax)")  # fmt: skip
    p.set_defaults(run=run)
