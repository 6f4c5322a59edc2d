"""``formal-algorithms train``: tokenize a corpus, train a DTransformer (Algorithms 10, 13) with
AdamW, report held-out loss, write a checkpoint and a loss plot, print a sample (Algorithm 14)."""

from __future__ import annotations

import math
import pathlib
import time

import jax
import numpy as np

from ..paper.architectures import init_d_transformer
from ..paper.functions import gelu
from ..paper.inference import check_tau
from ..paper.normalisation import EPS
from ..paper.tokenization import split_text
from ..practice.checkpoint import save_checkpoint
from .common import (
    CHECKPOINT_NAME,
    DEFAULT_OUT,
    PROG,
    check_positive,
    chunks,
    duration,
    make_tokenizer,
    model_options,
    n_params,
    read_text,
    say,
    train_with_progress,
    unigram_entropy,
)
from .stream import stream_sample


def run(args) -> int:
    check_positive(args, "steps", "batch_size", "d_e", "layers", "heads", "sample_length")
    if args.ell_max < 2:
        raise ValueError(f"--ell-max must be at least 2, got {args.ell_max}")
    tau = check_tau("--temperature", args.temperature)
    started = time.perf_counter()
    out = pathlib.Path(args.out)
    text, source = read_text(args.text)
    train_text, held_text = split_text(text, 0.1)
    tokenizer = make_tokenizer(args.tokenizer, text, train_text, args.vocab_size)
    data = chunks(train_text, tokenizer, args.ell_max, "training")
    held = chunks(held_text, tokenizer, args.ell_max, "held-out")
    n_train = sum(len(c) - 1 for c in data)
    say(f"corpus      {source}: {len(text):,} characters, last 10% held out")
    say(f"tokenizer   {args.tokenizer}, N_V = {tokenizer.N_V} (mask, bos, eos = "
         f"{tokenizer.mask_token}, {tokenizer.bos_token}, {tokenizer.eos_token})")  # fmt: skip
    say(f"data        {len(data):,} training sequences of ≤ {args.ell_max} tokens "
         f"({n_train:,} predicted tokens), {len(held):,} held out")  # fmt: skip

    key_init, key_train, key_sample = jax.random.split(jax.random.key(args.seed), 3)
    d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_d_transformer(key_init, N_V=tokenizer.N_V, ell_max=args.ell_max, L=args.layers,
                               H=args.heads, d_e=args.d_e, d_mlp=d_mlp)  # fmt: skip
    say(f"model       DTransformer (Algorithm 10): L = {args.layers}, H = {args.heads}, "
         f"d_e = {args.d_e}, d_mlp = {d_mlp}, ell_max = {args.ell_max}; "
         f"{n_params(theta) / 1e6:.2f} M parameters")  # fmt: skip
    epochs = args.steps * args.batch_size / len(data)
    say(f"training    {args.steps} steps × {args.batch_size} sequences ({epochs:.1f} epochs), "
         f"AdamW lr {args.lr:g}, warmup + cosine decay, clip 1.0 (the first step compiles)")  # fmt: skip
    theta, history = train_with_progress(theta, data, key_train, args, "train")
    train_seconds = time.perf_counter() - started

    from ..practice.trainer import evaluate

    result = evaluate(theta, held, batch_size=args.batch_size)
    unigram = unigram_entropy(data)
    n_chars = len(tokenizer.decode(np.concatenate(held)))
    bits_per_char = result.loss * result.n_targets / max(n_chars, 1) / math.log(2)
    say(f"held-out    loss {result.loss:.3f} nats/token ({bits_per_char:.2f} bits/char), "
         f"next-token accuracy {result.accuracy:.1%}; unigram entropy {unigram:.3f} nats/token")  # fmt: skip

    from ..visualise import plot_loss

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
    say(f"wrote       {path} and {png}")
    say(f"sample      (Algorithm 14, τ = {tau:g}, {args.sample_length} tokens, seed {args.seed}):")
    say("-" * 78)
    stream_sample(theta, tokenizer, args.prompt, key_sample, args.sample_length, tau, gelu, EPS)
    say("-" * 78)
    say(f"done in {duration(time.perf_counter() - started)} (training {duration(train_seconds)})."
         f" More: {PROG} sample --checkpoint {path} --prompt 'The '")  # fmt: skip
    return 0


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
    model_options(p, d_e=96, layers=3, heads=3, steps=2400, batch_size=16, lr=3e-3, warmup=100,
                   weight_decay=0.1)  # fmt: skip
    p.add_argument("--prompt", default="", help="prompt of the final sample (default: none)")
    p.add_argument("--sample-length", type=int, default=300,
                   help="tokens in the final sample (default %(default)s)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature τ (default %(default)s; 0 = argmax)")  # fmt: skip
    p.set_defaults(run=run)
