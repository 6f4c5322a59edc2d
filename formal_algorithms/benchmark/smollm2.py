"""Generation speed on a real model (issue 17): SmolLM2-135M-Instruct, greedy, batch 1, float32.

Contenders, side by side in one run, timed round-robin (one call each per round, medians):

- ``ours``: the Llama family's cached Algorithm 14 (:class:`formal_algorithms.families.llama.
  Decoder`: a jitted prefill of the bucketed prompt, then one jitted column per token), θ read
  from the GGUF by :mod:`formal_algorithms.interop.gguf`;
- ``transformers``: ``LlamaForCausalLM.from_pretrained(folder, gguf_file=…)`` and ``generate``
  (greedy, its dynamic key/value cache, ``eos_token_id=None`` so that both produce exactly
  ``n`` tokens), ``no_grad``, torch threads = the machine's cores (JAX uses them all too).

Reported: tokens/s over the ``n`` generated tokens (prefill included, as a user sees it), the
time to the first token (the prefill and one draw: ours ``next(stream)``; transformers
``generate`` with ``max_new_tokens=1``), transformers also with 1 torch thread (the speedup is
against the faster of its two settings), whether the two token sequences are equal, the load
average before and after. Run ``python -m formal_algorithms.benchmark.smollm2 [--tokens N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from .common import round_robin, warm_up

PROMPT = "What is gravity?"


def _hf_model(path):
    import torch
    from transformers import LlamaForCausalLM

    folder, name = os.path.split(path)
    return LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()


def run(*, n: int = 64, repeats: int = 3, prompt: str = PROMPT) -> dict:
    import jax
    import torch

    from ..families.llama import Decoder
    from ..interop.gguf import gguf_tokenizer, read_llama_gguf, smollm2_path

    path = smollm2_path()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = read_llama_gguf(path)
    tokenizer = gguf_tokenizer(path)
    hf = _hf_model(path)
    messages = [{"role": "user", "content": prompt}]
    chat = dict(add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = tokenizer.apply_chat_template(messages, **chat)["input_ids"]
    decoder = Decoder(model.theta, context=model.context)
    x = torch.tensor(ids)[None]
    outputs = {}

    def ours():
        outputs["ours"] = decoder.generate(ids, max_new=n, key=jax.random.key(0), tau=0.0)

    def ours_first():
        next(iter(decoder.stream(ids, max_new=n, tau=0.0)))

    def theirs(k=n, name="transformers"):
        with torch.no_grad():
            greedy = dict(do_sample=False, eos_token_id=None, pad_token_id=2)
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=k, **greedy)
        outputs[name] = out[0, len(ids) :].tolist()

    def theirs_first():
        theirs(1, "transformers_first")

    def one_thread(fn):  # on a loaded machine torch's spinning threads can be far slower
        def run():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(threads)

        return run

    runs = {"ours": ours, "transformers": theirs, "ours_first": ours_first,
            "transformers_first": theirs_first, "transformers_1_thread": one_thread(theirs),
            "transformers_first_1_thread": one_thread(theirs_first)}  # fmt: skip
    load_before = os.getloadavg()
    first_call = warm_up(runs)  # compiles ours, allocates theirs
    times = round_robin(runs, repeats)
    return _result(path, ids, n, threads, repeats, times, first_call, outputs, load_before)


def _result(path, ids, n, threads, repeats, times, first_call, outputs, load_before) -> dict:
    """The medians, rates, time to the first token, the speed-up and whether the tokens agree."""
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "model": os.path.basename(path), "prompt_tokens": len(ids), "new_tokens": n,
        "threads": threads, "repeats": repeats,
        "tokens_per_s": {k: n / median[k] for k in ("ours", "transformers",
                                                     "transformers_1_thread")},
        "time_to_first_token_s": {"ours": median["ours_first"],
                                  "transformers": median["transformers_first"],
                                  "transformers_1_thread": median["transformers_first_1_thread"]},
        "speedup": min(median["transformers"], median["transformers_1_thread"]) / median["ours"],
        "same_tokens": outputs["ours"] == outputs["transformers"],
        "times_s": times, "first_call_s": first_call,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }  # fmt: skip
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m formal_algorithms.benchmark.smollm2", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, default=64, help="new tokens (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default %(default)s)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(n=args.tokens, repeats=args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
