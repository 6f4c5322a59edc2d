"""``formal-algorithms attention``: every head's attention weights (Algorithm 10, line 6) for a
prompt, drawn as a PNG grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .common import CHECKPOINT_NAME, DEFAULT_OUT, check_prompt, load_lm, say
from .options import png_file


def run(args) -> int:
    from ..visualise import d_attention_weights, plot_attention, token_label

    if args.prompt == "":
        raise ValueError("--prompt is empty: there is nothing to attend to but bos")
    checkpoint, tokenizer, activation, eps = load_lm(args.checkpoint)
    which = "--prompt" if "--prompt" in getattr(args, "given", ()) else "the default prompt"
    check_prompt(tokenizer, args.prompt, which)
    x = tokenizer.encode(args.prompt, bos=True)
    ell_max = checkpoint.hyperparameters["ell_max"]
    if len(x) > ell_max:
        raise ValueError(
            f"{which} is {len(x)} tokens with bos, more than the model's ell_max = {ell_max}; "
            "give a shorter --prompt"
        )
    weights = jax.jit(d_attention_weights, static_argnames=("activation", "eps"))
    A, _, _ = weights(jnp.asarray(x), checkpoint.theta, activation=activation, eps=eps)
    labels = [token_label(tokenizer.decode([t], special="show")) for t in x.tolist()]
    hp = checkpoint.hyperparameters
    path = plot_attention(
        A,
        labels,
        args.out,
        title=f"Algorithm 10 attention weights A[t_z, t_x] (L = {hp['L']}, H = {hp['H']}): "
        f"{args.prompt[:40]!r}",
    )
    say(
        f"wrote {path}: {hp['L']} layers × {hp['H']} heads, {len(x)} tokens "
        f"(rows: key t_z, columns: query t_x; each column sums to 1)"
    )
    return 0


def register(sub) -> None:
    """Add the ``attention`` command to the parser's subcommands."""
    p = sub.add_parser(
        "attention",
        help="draw every head's attention pattern for a prompt as a PNG grid",
        description="Replay Algorithm 10 on --prompt and draw the attention weights of every "
        "head of every layer, in the paper's orientation A[t_z, t_x].",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=str(DEFAULT_OUT / CHECKPOINT_NAME),
        help="checkpoint (default %(default)s)",
    )
    p.add_argument("--prompt", default="The object is a function.", help="text to look at")
    p.add_argument(
        "--out",
        metavar="FILE.png",
        type=png_file,
        default="attention.png",
        help="output PNG (default %(default)s)",
    )
    p.set_defaults(run=run)
