"""Generation contenders (batch 1): our cached Algorithm 14, the literal Algorithm 14 and
transformers' ``generate`` with its cache."""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.parameters import init_d_transformer
from .common import round_robin, summary, warm_up
from .pytorch import gpt2_model


def cached_contender(theta, prompt, ell_gen):
    """Our cached Algorithm 14 (:func:`~.cache.d_inference_cached`: one jitted loop over steps)."""
    from ..practice.cache import d_inference_cached

    key = jax.random.key(1)

    def run():
        np.asarray(d_inference_cached(prompt, theta, key, ell_gen=ell_gen))

    return run


def literal_step_contender(theta, n):
    """Exactly one pass of the literal Algorithm 14's loop body (lines 3-6) on a sequence of length
    n: the full forward on the whole sequence, jitted for that length."""
    from ..paper.functions import gelu
    from ..paper.inference import d_step, step_key
    from ..paper.normalisation import EPS

    key = jax.random.key(2)
    x = jnp.asarray(np.random.default_rng(n).integers(0, theta.W_e.shape[1] - 3, n), jnp.int32)

    def run():
        y = d_step(x, theta, step_key(key, 0), 1.0, activation=gelu, eps=EPS)
        np.asarray(jnp.concatenate([x, y[None].astype(x.dtype)]))

    return run


def literal_full_contender(theta, prompt, ell_gen):
    """The literal Algorithm 14 end to end (it compiles once per fed length: minutes)."""
    from ..paper.inference import d_inference

    key = jax.random.key(1)

    def run():
        np.asarray(d_inference(prompt, theta, key, ell_gen=ell_gen))

    return run


def hf_generate_contender(cfg, prompt, ell_gen, threads):
    """``GPT2LMHeadModel.generate`` with its KV cache, random weights of the same sizes, pure
    sampling (τ = 1, no top-k/top-p), all ``ell_gen`` tokens forced, ``threads`` torch threads."""
    import torch

    torch.manual_seed(0)
    model = gpt2_model(cfg, bos_token_id=cfg["N_V"] - 2, eos_token_id=cfg["N_V"] - 1).eval()
    input_ids = torch.as_tensor(np.asarray(prompt)[None, :], dtype=torch.long)
    kwargs = dict(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=ell_gen,
        min_new_tokens=ell_gen,
        use_cache=True,
        pad_token_id=0,
        attention_mask=torch.ones_like(input_ids),
    )

    def run():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            out = model.generate(input_ids, **kwargs)
        assert out.shape[1] == input_ids.shape[1] + ell_gen, out.shape  # all ell_gen generated

    return run


def generation(cfg, gen, repeats, threads, *, literal_full: bool = False, log=None):
    """Cached Algorithm 14 vs the literal one vs transformers' ``generate``, round-robin.

    The literal form compiles once per sequence length, so by default its run time is the sum,
    over the lengths a run feeds, of per-step medians measured at ``gen["literal_lengths"]`` and
    linearly interpolated; ``literal_full=True`` times whole runs instead.
    """
    hp = {k: v for k, v in cfg.items() if k != "batch"}
    theta = init_d_transformer(jax.random.key(0), **hp)
    prompt = np.random.default_rng(0).integers(0, cfg["N_V"] - 3, gen["prompt"]).astype(np.int32)
    ell_gen, last = gen["ell_gen"], gen["prompt"] + gen["ell_gen"] - 1
    lengths = sorted(
        {n for n in gen["literal_lengths"] if gen["prompt"] <= n <= last} | {gen["prompt"], last}
    )
    runs = {"cached": cached_contender(theta, prompt, ell_gen)}
    if literal_full:
        runs["literal"] = literal_full_contender(theta, prompt, ell_gen)
    else:
        for n in lengths:
            runs[f"literal_step_{n}"] = literal_step_contender(theta, n)
    for t in threads:
        runs[f"hf_{t}thr"] = hf_generate_contender(cfg, prompt, ell_gen, t)
    first = warm_up(runs)
    if log:
        log("first calls (s): " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()))
    times = round_robin(runs, repeats)
    hf = {t: summary(times[f"hf_{t}thr"], ell_gen, first[f"hf_{t}thr"]) for t in threads}
    best = max(threads, key=lambda t: hf[t]["tokens_per_s"])
    out = dict(
        cached=summary(times["cached"], ell_gen, first["cached"]),
        hf_generate=dict(hf[best], threads=best),
        hf_generate_by_threads={str(t): hf[t] for t in threads},
    )
    if literal_full:
        out["literal"] = dict(
            summary(times["literal"], ell_gen, first["literal"]), method="full runs"
        )
    else:
        per_step = {n: statistics.median(times[f"literal_step_{n}"]) for n in lengths}
        feeds = np.arange(gen["prompt"], gen["prompt"] + ell_gen)  # the lengths a run feeds
        literal_s = float(np.interp(feeds, lengths, [per_step[n] for n in lengths]).sum())
        out["literal"] = dict(
            per_step_median_s={str(n): s for n, s in per_step.items()},
            estimated_run_s=literal_s,
            tokens_per_s=ell_gen / literal_s,
            method="per-step medians summed over the fed lengths (interpolated)",
        )
    return out
