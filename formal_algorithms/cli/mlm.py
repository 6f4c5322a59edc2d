"""``formal-algorithms mlm``: an ETransformer (Algorithms 9, 12) learns to recover masked
characters, scored against the most-frequent-character baseline."""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import e_transformer_logits
from ..paper.parameters import init_e_transformer
from ..paper.tokenization import CharTokenizer, split_text
from ..practice.checkpoint import save_checkpoint
from .common import (
    CHECKPOINT_NAME,
    PROG,
    check_positive,
    chunks,
    duration,
    model_options,
    n_params,
    read_text,
    run_options,
    say,
    train_with_progress,
)
from .train import prepare_out_dir

FAMILY = "masked-character model (Algorithms 9, 12)"


def run(args) -> int:
    check_positive(args, "steps", "batch_size", "d_e", "layers", "heads")
    if not 0 < args.p_mask < 1:
        raise ValueError(f"--p-mask must be in (0, 1), got {args.p_mask}")
    from ..paper.training import draw_mask
    from ..practice.trainer import evaluate

    started = time.perf_counter()
    out = prepare_out_dir(pathlib.Path(args.out), force=args.force)
    text, source = read_text(args.text)
    train_text, held_text = split_text(text, 0.1)
    tokenizer = CharTokenizer.from_text(text)
    data = chunks(train_text, tokenizer, args.ell_max, "training")
    held = chunks(held_text, tokenizer, args.ell_max, "held-out")[: args.test_size]
    key_init, key_train, key_eval = jax.random.split(jax.random.key(args.seed), 3)
    d_mlp = args.d_mlp or 4 * args.d_e
    theta = init_e_transformer(key_init, N_V=tokenizer.N_V, ell_max=args.ell_max, L=args.layers,
                               H=args.heads, d_e=args.d_e, d_mlp=d_mlp)  # fmt: skip
    say(f"corpus      {source}: {len(data)} training sequences of ≤ {args.ell_max} characters, "
         f"{len(held)} held out; p_mask = {args.p_mask}")  # fmt: skip
    say(f"model       ETransformer (Algorithm 9): L = {args.layers}, H = {args.heads}, "
         f"d_e = {args.d_e}, d_mlp = {d_mlp}; {n_params(theta) / 1e6:.2f} M parameters; "
         f"training: Algorithm 12's loss, {args.steps} AdamW steps")  # fmt: skip
    theta, history = train_with_progress(theta, data, key_train, args, "mlm", p_mask=args.p_mask)

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
    say(f"held-out    masked-character recovery accuracy {result.accuracy:.1%} on "
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
        say(f"  {name} " + "".join(chars).replace("\n", "⏎"))
    config = {k: getattr(args, k) for k in ("ell_max", "p_mask", "test_size", "steps",
              "batch_size", "d_e", "layers", "heads", "lr", "warmup", "weight_decay", "seed")}  # fmt: skip
    config.update(d_mlp=d_mlp, text=args.text)
    path = save_checkpoint(
        out / CHECKPOINT_NAME, theta, tokenizer=tokenizer.to_dict(),
        extra={"family": FAMILY, "activation": "gelu", "corpus": source,
               "task": f"recover masked characters (p_mask = {args.p_mask})", "config": config,
               "step": args.steps, "status": "finished", "held_out_loss": float(result.loss),
               "accuracy": float(result.accuracy), "baseline": baseline},
        arrays={"loss_history": np.asarray(history, np.float32)},
    )  # fmt: skip
    say(f"wrote       {path}; try: {PROG} sample --checkpoint {path} --prompt 'th_ _ord' "
        "(_ = a masked character)")  # fmt: skip
    say(f"done in {duration(time.perf_counter() - started)}")
    return 0


def register(sub) -> None:
    """Add the ``mlm`` command to the parser's subcommands."""
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
    model_options(p, d_e=64, layers=2, heads=4, steps=1000, batch_size=64, lr=3e-3, warmup=100,
                   weight_decay=0.01)  # fmt: skip
    run_options(p, pathlib.Path("runs") / "mlm")
    p.set_defaults(run=run)
