"""Generation speed of each decoder family's cached form (issue 30): Llama, Qwen2, Mistral, Gemma,
GPT-NeoX, Post-LN OPT and Phi on a small random configuration, greedy, batch 1, float32, against
transformers' ``generate``.

Per family, side by side in one run, timed round-robin (one call each per round, medians):

- ``ours``: the family's θ read from the transformers model by its ``*_config`` and
  ``*_from_state_dict`` (θ carries its configuration), decoded by the family's
  :class:`formal_algorithms.families.decoding.CachedDecoder` (``llama.Decoder`` for Llama, Qwen2,
  Mistral and Gemma; ``gpt_neox_decoder``; ``opt_decoder``; ``phi_decoder``): a jitted prefill,
  one jitted column per token;
- ``transformers``: the same model's ``generate`` (greedy, its dynamic key/value cache,
  ``eos_token_id=None`` so that both produce exactly ``n`` tokens), ``no_grad``, with torch's
  default threads and with 1 thread; the speed-up is against the faster of the two.

Reported per family: tokens/s over the ``n`` generated tokens (prefill included), the speed-up,
whether the token sequences are equal, and the load average before and after (a speed measured
under another process's load is not a claim). Run ``python -m formal_algorithms.benchmark.families``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from .common import round_robin, warm_up

# Llama's keywords; each family's are derived in _sizes
SMALL = dict(vocab_size=2000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
             num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
             rope_theta=1e4, rms_norm_eps=1e-5)  # fmt: skip
QUICK = dict(SMALL, vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)  # fmt: skip
PROMPT = 16


def _sizes(size: dict) -> dict:
    """Each family's transformers keywords for ``size`` (given in Llama's names)."""
    d, H = size["hidden_size"], size["num_attention_heads"]
    opt = dict(
        vocab_size=size["vocab_size"],
        hidden_size=d,
        ffn_dim=size["intermediate_size"],
        num_hidden_layers=size["num_hidden_layers"],
        num_attention_heads=H,
        max_position_embeddings=size["max_position_embeddings"],
        word_embed_proj_dim=d,
        do_layer_norm_before=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    neox = {k: v for k, v in size.items() if k not in ("num_key_value_heads", "rms_norm_eps")}
    return {
        "llama": size,
        "qwen2": size,
        "gemma": dict(size, head_dim=d // H),
        "gpt_neox": dict(neox, rotary_pct=0.25, layer_norm_eps=1e-5),
        "opt_post_ln": opt,
        "phi": dict(neox, num_key_value_heads=H, layer_norm_eps=1e-5),
    }


def family_models(size: dict, window: int) -> dict:
    """``name → (transformers model, our decoder)`` for the seven families."""
    import torch
    import transformers as T

    from ..families import gemma, gpt_neox, llama, llama_loading, mistral, opt, phi, qwen2

    def qwen2_decoder(theta):
        return llama.Decoder(theta, hyperparameters=qwen2.qwen2_hyperparameters)

    torch.manual_seed(0)
    sizes = _sizes(size)
    specs = {
        "llama": (T.LlamaConfig, T.LlamaForCausalLM, sizes["llama"], llama_loading.llama_config,
                  llama_loading.llama_from_state_dict, llama.Decoder),
        "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM, sizes["qwen2"], qwen2.qwen2_config,
                  qwen2.qwen2_from_state_dict, qwen2_decoder),
        "mistral": (T.MistralConfig, T.MistralForCausalLM, dict(size, sliding_window=window),
                    mistral.mistral_config, mistral.mistral_from_state_dict, llama.Decoder),
        "gemma": (T.GemmaConfig, T.GemmaForCausalLM, sizes["gemma"], gemma.gemma_config,
                  gemma.gemma_from_state_dict, llama.Decoder),
        "gpt_neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM, sizes["gpt_neox"],
                     gpt_neox.gpt_neox_config, gpt_neox.gpt_neox_from_state_dict,
                     gpt_neox.gpt_neox_decoder),
        "opt_post_ln": (T.OPTConfig, T.OPTForCausalLM, sizes["opt_post_ln"], opt.opt_config,
                        opt.opt_from_state_dict, opt.opt_decoder),
        "phi": (T.PhiConfig, T.PhiForCausalLM, sizes["phi"], phi.phi_config,
                phi.phi_from_state_dict, phi.phi_decoder),
    }  # fmt: skip
    models = {}
    for name, (config_cls, model_cls, keywords, config_of, load, decoder_of) in specs.items():
        config = config_cls(**keywords, attn_implementation="sdpa")
        model = model_cls(config).eval()
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        models[name] = (model, decoder_of(load(state, **config_of(config.to_dict()))))
    return models


# the sizes a result records
REPORTED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size")  # fmt: skip


def _greedy(model, x, n):
    """transformers' greedy ``generate`` of exactly n tokens (no early stop)."""
    import torch

    greedy = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        return model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, **greedy
        )


def run(*, n: int = 64, repeats: int = 3, size=None) -> dict:
    import jax
    import numpy as np
    import torch

    size = SMALL if size is None else size
    threads = torch.get_num_threads()
    prompt = np.random.default_rng(0).integers(3, size["vocab_size"], PROMPT).tolist()
    x = torch.tensor(prompt)[None]
    load_before = os.getloadavg()
    results = {}
    for name, (model, decoder) in family_models(size, window=(PROMPT + n) // 2).items():
        outputs = {}

        def ours(decoder=decoder, outputs=outputs):
            outputs["ours"] = decoder.generate(prompt, max_new=n, key=jax.random.key(0))

        def theirs(model=model, outputs=outputs, k=1):
            torch.set_num_threads(k)
            try:
                out = _greedy(model, x, n)
            finally:
                torch.set_num_threads(threads)
            outputs["transformers"] = out[0, PROMPT:].tolist()

        runs = {
            "ours": ours,
            "transformers": lambda t=theirs: t(k=threads),
            "transformers_1_thread": theirs,
        }
        warm_up(runs)
        times = round_robin(runs, repeats)
        median = {k: statistics.median(t) for k, t in times.items()}
        results[name] = {
            "tokens_per_s": {k: n / v for k, v in median.items()},
            "speedup": min(median["transformers"], median["transformers_1_thread"])
            / median["ours"],
            "same_tokens": outputs["ours"] == outputs["transformers"],
            "times_s": times,
        }
    return {
        "size": {k: size[k] for k in REPORTED},
        "prompt_tokens": PROMPT,
        "new_tokens": n,
        "repeats": repeats,
        "threads": threads,
        "families": results,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m formal_algorithms.benchmark.families", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, default=64, help="new tokens (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default %(default)s)")
    args = parser.parse_args(argv)
    result = run(n=args.tokens, repeats=args.repeats)
    for name, r in result["families"].items():
        rates = ", ".join(f"{k} {v:.1f}" for k, v in r["tokens_per_s"].items())
        print(
            f"{name}: tokens/s {rates}; ours ×{r['speedup']:.2f}; same tokens: {r['same_tokens']}"
        )
    print(json.dumps(result["load_average"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
