"""Issue 9's benchmark: ours vs the PyTorch implementations people would pick, side by side, one run.

Measured on this machine, each contender warmed up (compiled) first and then timed round-robin
(one call each per round, medians over ``repeats`` rounds, so that a change in the machine's load
hits every contender alike):

- forward throughput (tokens/s) of a batch: ours ``jax.jit(jax.vmap(d_transformer_logits))`` vs
  ``transformers.GPT2LMHeadModel`` (GPT-2-like configuration), and
  ``jax.jit(jax.vmap(ed_transformer_logits))`` vs ``torch.nn.Transformer`` with token and learned
  position embeddings and an unembedding (Algorithm 8's shape; seq2seq configuration). PyTorch in
  eval mode, ``no_grad``, dropout 0, timed with ``torch.set_num_threads(os.cpu_count())`` and with
  1 thread (on a loaded machine torch's spinning OpenMP threads can be far slower); the faster
  setting is the reference for the ratios, every setting is in the JSON.
- training-step throughput (tokens/s) with AdamW: ours ``trainer.train_step`` (the padded losses,
  ``optax.adamw``) vs the same PyTorch models (``loss.backward()``, ``torch.optim.AdamW.step()``).
- generation (batch 1, prompt 16, 240 new tokens): our cached Algorithm 14 vs the literal Algorithm
  14 vs ``GPT2LMHeadModel.generate`` with its cache (the literal form is timed per step at a few
  lengths and summed over the 240 fed lengths, see :func:`generation`).
- the same for :mod:`.fast`'s batch-as-columns form (``*_fast``; equal results,
  tests/test_fast.py).
- achieved GFLOP/s of our training step (FLOPs from XLA's cost analysis of the compiled step, and
  analytically) against the measured float32 matmul peak (a jitted 2048×2048 ``jnp.dot``).

Everything is float32. The load average before and after is recorded: other processes slow every
contender, unevenly. Needs the ``train`` and ``interop`` extras (optax, torch, transformers,
matplotlib).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from .architectures import (
    d_transformer_logits,
    ed_transformer_logits,
    init_d_transformer,
    init_ed_transformer,
)

GPT2_LIKE = dict(N_V=512, ell_max=256, L=4, H=4, d_e=256, d_mlp=1024, batch=8)
SEQ2SEQ = dict(N_V=512, ell_max=128, L_enc=2, L_dec=2, H=4, d_e=256, d_mlp=1024, batch=8)
QUICK_D = dict(N_V=64, ell_max=32, L=2, H=2, d_e=32, d_mlp=64, batch=4)
QUICK_ED = dict(N_V=64, ell_max=16, L_enc=1, L_dec=1, H=2, d_e=32, d_mlp=64, batch=4)
GENERATION = dict(prompt=16, ell_gen=240, literal_lengths=(16, 96, 176, 255))
QUICK_GENERATION = dict(prompt=4, ell_gen=12, literal_lengths=(4, 15))
LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.01  # torch.optim.AdamW's default weight decay


# ------------------------------------------------------------------------------------- timing


def round_robin(runs: dict, rounds: int) -> dict:
    """Wall times of each ``runs[name]()`` (which must block until done), interleaved by round."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def warm_up(runs: dict) -> dict:
    first = {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    return first


# ------------------------------------------------------------------------------------ ours


def _tokens(rng, B, ell, N_V):
    return rng.integers(0, N_V - 3, (B, ell)).astype(np.int32)


def ours_d(cfg, rng, fast_path: bool = False):
    """Forward and training step of Algorithm 10 on a (B, ℓ) batch, and the compiled step's FLOPs.

    The literal form, ``jax.vmap`` of :func:`~.architectures.d_transformer_logits` and
    :func:`~.trainer.train_step`; or with ``fast_path`` :mod:`.fast`'s batch-as-columns form
    (equal results, tests/test_fast.py).
    """
    import optax

    from . import fast, trainer

    hp = {k: v for k, v in cfg.items() if k != "batch"}
    theta = init_d_transformer(jax.random.key(0), **hp)
    x = jnp.asarray(_tokens(rng, cfg["batch"], cfg["ell_max"], cfg["N_V"]))
    opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    batch = dict(x=x, valid=jnp.ones(x.shape, bool))
    state = dict(theta=theta, opt=opt.init(theta))
    if fast_path:
        forward = jax.jit(fast.d_transformer_logits_batch)
        train_step = functools.partial(fast.train_step_fast, optimizer=opt)
    else:
        forward = jax.jit(jax.vmap(d_transformer_logits, in_axes=(0, None)))
        train_step = functools.partial(trainer.train_step, p_mask=0.15, optimizer=opt)

    def fwd():
        forward(x, theta).block_until_ready()

    def step():
        state["theta"], state["opt"], loss, _ = train_step(state["theta"], state["opt"], batch)
        loss.block_until_ready()

    compiled = train_step.func.lower(theta, state["opt"], batch, **train_step.keywords).compile()
    return fwd, step, _xla_flops(compiled)


def ours_ed(cfg, rng, fast_path: bool = False):
    """Forward and training step of Algorithm 8 on a batch of (z, x) pairs: the literal form
    (``jax.vmap`` of :func:`~.architectures.ed_transformer_logits`, :func:`~.trainer.train_step`)
    or with ``fast_path`` :mod:`.fast`'s batch-as-columns form."""
    import optax

    from . import fast, trainer

    hp = {k: v for k, v in cfg.items() if k != "batch"}
    theta = init_ed_transformer(jax.random.key(0), **hp)
    B, ell = cfg["batch"], cfg["ell_max"]
    z = jnp.asarray(_tokens(rng, B, ell, cfg["N_V"]))
    x = jnp.asarray(_tokens(rng, B, ell, cfg["N_V"]))
    opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    valid = jnp.ones((B, ell), bool)
    batch = dict(z=z, z_valid=valid, x=x, x_valid=valid)
    state = dict(theta=theta, opt=opt.init(theta))
    if fast_path:
        forward = jax.jit(lambda z, x, th: fast.ed_transformer_logits_batch(z, valid, x, th))
        train_step = functools.partial(fast.train_step_fast, optimizer=opt)
    else:
        forward = jax.jit(jax.vmap(ed_transformer_logits, in_axes=(0, 0, None)))
        train_step = functools.partial(trainer.train_step, p_mask=0.15, optimizer=opt)

    def fwd():
        forward(z, x, theta).block_until_ready()

    def step():
        state["theta"], state["opt"], loss, _ = train_step(state["theta"], state["opt"], batch)
        loss.block_until_ready()

    return fwd, step


def _xla_flops(compiled):
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def analytic_train_flops_d(cfg) -> float:
    """Matmul FLOPs of one training step of Algorithm 10 (forward ×3 for forward + backward).

    Per layer and token: Q, K, V, output projections ``4·2·d_e²``, MLP ``2·2·d_e·d_mlp``, scores
    and weighted sum ``2·2·ℓ·d_e`` (the full ℓ×ℓ product: the causal mask does not skip work);
    plus the unembedding ``2·d_e·N_V`` per token.
    """
    d, ell, B = cfg["d_e"], cfg["ell_max"], cfg["batch"]
    per_token = cfg["L"] * (8 * d * d + 4 * d * cfg["d_mlp"] + 4 * ell * d) + 2 * d * cfg["N_V"]
    return 3.0 * per_token * B * ell


def matmul_peak(n: int, repeats: int) -> dict:
    """float32 GFLOP/s of a jitted ``n×n @ n×n`` (XLA) and of ``torch.mm``, medians, same run."""
    import torch

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    ta = torch.randn(n, n)
    runs = {
        "jax": lambda: dot(a, a).block_until_ready(),
        "torch": lambda: torch.mm(ta, ta),
    }
    warm_up(runs)
    times = round_robin(runs, repeats)
    flops = 2.0 * n**3
    return {k: dict(median_s=statistics.median(t), gflops=flops / statistics.median(t) / 1e9)
            for k, t in times.items()}  # fmt: skip


# ----------------------------------------------------------------------------------- PyTorch


def torch_gpt2(cfg, rng):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=cfg["N_V"], n_positions=cfg["ell_max"], n_embd=cfg["d_e"], n_layer=cfg["L"],
        n_head=cfg["H"], n_inner=cfg["d_mlp"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.as_tensor(_tokens(rng, cfg["batch"], cfg["ell_max"], cfg["N_V"]), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def fwd():
        model.eval()
        with torch.no_grad():
            return model(ids).logits

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        opt.step()

    return fwd, step, transformers.__version__


def torch_seq2seq(cfg, rng):
    """``torch.nn.Transformer`` (Post-LN, ReLU, as Algorithm 8) with Algorithm 8's embeddings and
    unembedding: token embedding, learned positions, a linear ``W_u``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    d, ell, N_V = cfg["d_e"], cfg["ell_max"], cfg["N_V"]

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_e = nn.Embedding(N_V, d)
            self.W_p = nn.Parameter(0.02 * torch.randn(ell, d))
            self.core = nn.Transformer(
                d, cfg["H"], cfg["L_enc"], cfg["L_dec"], cfg["d_mlp"], dropout=0.0,
                batch_first=True,
            )  # fmt: skip
            self.W_u = nn.Linear(d, N_V, bias=False)

        def forward(self, z, x):
            n = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(n)
            Z = self.W_e(z) + self.W_p[: z.shape[1]]
            X = self.W_e(x) + self.W_p[:n]
            return self.W_u(self.core(Z, X, tgt_mask=mask, tgt_is_causal=True))

    model = Seq2Seq()
    z = torch.as_tensor(_tokens(rng, cfg["batch"], ell, N_V), dtype=torch.long)
    x = torch.as_tensor(_tokens(rng, cfg["batch"], ell, N_V), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()

    def fwd():
        model.eval()
        with torch.no_grad():
            model(z, x)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        logits = model(z, x)[:, :-1]
        loss_fn(logits.reshape(-1, N_V), x[:, 1:].reshape(-1)).backward()
        opt.step()

    return fwd, step


# -------------------------------------------------------------------------------- generation


def cached_contender(theta, prompt, ell_gen):
    """Our cached Algorithm 14 (:func:`~.cache.d_inference_cached`: one jitted loop over steps)."""
    from .cache import d_inference_cached

    key = jax.random.key(1)

    def run():
        np.asarray(d_inference_cached(prompt, theta, key, ell_gen=ell_gen))

    return run


def literal_step_contender(theta, n):
    """Exactly one pass of the literal Algorithm 14's loop body (lines 3-6) on a sequence of length
    n: the full forward on the whole sequence, jitted for that length."""
    from .functions import gelu
    from .inference import _d_step, step_key
    from .normalisation import EPS

    key = jax.random.key(2)
    x = jnp.asarray(np.random.default_rng(n).integers(0, theta.W_e.shape[1] - 3, n), jnp.int32)

    def run():
        y = _d_step(x, theta, step_key(key, 0), 1.0, activation=gelu, eps=EPS)
        np.asarray(jnp.concatenate([x, y[None].astype(x.dtype)]))

    return run


def literal_full_contender(theta, prompt, ell_gen):
    """The literal Algorithm 14 end to end (it compiles once per fed length: minutes)."""
    from .inference import d_inference

    key = jax.random.key(1)

    def run():
        np.asarray(d_inference(prompt, theta, key, ell_gen=ell_gen))

    return run


def hf_generate_contender(cfg, prompt, ell_gen, threads):
    """``GPT2LMHeadModel.generate`` with its KV cache, random weights of the same sizes, pure
    sampling (τ = 1, no top-k/top-p), all ``ell_gen`` tokens forced, ``threads`` torch threads."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=cfg["N_V"], n_positions=cfg["ell_max"], n_embd=cfg["d_e"], n_layer=cfg["L"],
        n_head=cfg["H"], n_inner=cfg["d_mlp"], bos_token_id=cfg["N_V"] - 2,
        eos_token_id=cfg["N_V"] - 1,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    input_ids = torch.as_tensor(np.asarray(prompt)[None, :], dtype=torch.long)
    kwargs = dict(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=ell_gen,
        min_new_tokens=ell_gen, use_cache=True, pad_token_id=0,
        attention_mask=torch.ones_like(input_ids),
    )  # fmt: skip

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
    lengths = sorted({n for n in gen["literal_lengths"] if gen["prompt"] <= n <= last}
                     | {gen["prompt"], last})  # fmt: skip
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
    hf = {t: _summary(times[f"hf_{t}thr"], ell_gen, first[f"hf_{t}thr"]) for t in threads}
    best = max(threads, key=lambda t: hf[t]["tokens_per_s"])
    out = dict(
        cached=_summary(times["cached"], ell_gen, first["cached"]),
        hf_generate=dict(hf[best], threads=best),
        hf_generate_by_threads={str(t): hf[t] for t in threads},
    )
    if literal_full:
        out["literal"] = dict(_summary(times["literal"], ell_gen, first["literal"]),
                              method="full runs")  # fmt: skip
    else:
        per_step = {n: statistics.median(times[f"literal_step_{n}"]) for n in lengths}
        feeds = np.arange(gen["prompt"], gen["prompt"] + ell_gen)  # the lengths a run feeds
        literal_s = float(np.interp(feeds, lengths, [per_step[n] for n in lengths]).sum())
        out["literal"] = dict(per_step_median_s={str(n): s for n, s in per_step.items()},
                              estimated_run_s=literal_s, tokens_per_s=ell_gen / literal_s,
                              method="per-step medians summed over the fed lengths (interpolated)")  # fmt: skip
    return out


# ------------------------------------------------------------------------------------- main


def _with_threads(fn, threads):
    import torch

    def run():
        torch.set_num_threads(threads)
        return fn()

    return run


def _summary(times, tokens, first=None):
    median = statistics.median(times)
    out = dict(median_s=median, times_s=times, tokens_per_s=tokens / median)
    if first is not None:
        out["first_call_s"] = first
    return out


def run(*, quick: bool = False, repeats: int | None = None, skip_generation: bool = False,
        log=print) -> dict:  # fmt: skip
    """Run the whole benchmark; returns the results dict (see :func:`write`)."""
    import torch

    threads = os.cpu_count()
    torch_threads = sorted({1, threads})
    repeats = repeats or (3 if quick else 7)
    cfg_d, cfg_ed = (QUICK_D, QUICK_ED) if quick else (GPT2_LIKE, SEQ2SEQ)
    gen = QUICK_GENERATION if quick else GENERATION
    rng = np.random.default_rng(0)
    results = dict(
        config=dict(gpt2_like=cfg_d, seq2seq=cfg_ed, generation=gen, dtype="float32",
                    repeats=repeats, torch_threads=torch_threads, quick=quick),
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(), jax=jax.__version__,
                     torch=torch.__version__, backend=jax.default_backend(),
                     loadavg_before=os.getloadavg()),
    )  # fmt: skip
    log(f"config: {results['config']}\nload average: {os.getloadavg()}")

    d_fwd, d_step, xla_flops = ours_d(cfg_d, rng)
    d_fwd_fast, d_step_fast, _ = ours_d(cfg_d, rng, fast_path=True)
    ed_fwd, ed_step = ours_ed(cfg_ed, rng)
    ed_fwd_fast, ed_step_fast = ours_ed(cfg_ed, rng, fast_path=True)
    t_d_fwd, t_d_step, hf_version = torch_gpt2(cfg_d, rng)
    t_ed_fwd, t_ed_step = torch_seq2seq(cfg_ed, rng)
    results["machine"]["transformers"] = hf_version
    runs = {"ours_d_forward": d_fwd, "ours_d_train": d_step,
            "ours_d_forward_fast": d_fwd_fast, "ours_d_train_fast": d_step_fast,
            "ours_ed_forward": ed_fwd, "ours_ed_train": ed_step,
            "ours_ed_forward_fast": ed_fwd_fast, "ours_ed_train_fast": ed_step_fast}  # fmt: skip
    for name, fn in (("gpt2_forward", t_d_fwd), ("gpt2_train", t_d_step),
                     ("torch_transformer_forward", t_ed_fwd),
                     ("torch_transformer_train", t_ed_step)):  # fmt: skip
        for t in torch_threads:
            runs[f"{name}_{t}thr"] = _with_threads(fn, t)
    first = warm_up(runs)
    log("warm-up (s): " + ", ".join(f"{k} {v:.2f}" for k, v in first.items()))
    times = round_robin(runs, repeats)
    tok_d = cfg_d["batch"] * cfg_d["ell_max"]
    tok_ed = cfg_ed["batch"] * cfg_ed["ell_max"]  # decoder tokens (the encoder's are extra work)
    for name, t in times.items():
        tokens = tok_d if ("_d_" in name or name.startswith("gpt2")) else tok_ed
        results[name] = _summary(t, tokens, first[name])
    for name in ("gpt2_forward", "gpt2_train", "torch_transformer_forward",
                 "torch_transformer_train"):  # fmt: skip
        # The reference is PyTorch's fastest thread setting (every setting is in the JSON).
        best = max(torch_threads, key=lambda t: results[f"{name}_{t}thr"]["tokens_per_s"])
        results[name] = dict(results[f"{name}_{best}thr"], threads=best)

    peak = matmul_peak(256 if quick else 2048, repeats)
    results["matmul_peak"] = peak
    analytic = analytic_train_flops_d(cfg_d)
    step_s = results["ours_d_train"]["median_s"]
    fast_s = results["ours_d_train_fast"]["median_s"]
    results["ours_d_train_flops"] = dict(
        gflops_analytic_fast=analytic / fast_s / 1e9,
        fraction_of_jax_peak_analytic_fast=analytic / fast_s / 1e9 / peak["jax"]["gflops"],
        xla_cost_analysis=xla_flops, analytic_matmul=analytic,
        gflops_xla=xla_flops / step_s / 1e9, gflops_analytic=analytic / step_s / 1e9,
        fraction_of_jax_peak_xla=xla_flops / step_s / 1e9 / peak["jax"]["gflops"],
        fraction_of_jax_peak_analytic=analytic / step_s / 1e9 / peak["jax"]["gflops"],
    )  # fmt: skip
    if not skip_generation:
        results["generation"] = generation(cfg_d, gen, repeats, torch_threads)
    results["machine"]["loadavg_after"] = os.getloadavg()
    results["ratios"] = ratios(results)
    log(table(results))
    return results


def ratios(r: dict) -> dict:
    tps = lambda name: r[name]["tokens_per_s"]  # noqa: E731
    out = {
        "forward_d_ours_over_gpt2": tps("ours_d_forward") / tps("gpt2_forward"),
        "train_d_ours_over_gpt2": tps("ours_d_train") / tps("gpt2_train"),
        "forward_ed_ours_over_torch": tps("ours_ed_forward") / tps("torch_transformer_forward"),
        "train_ed_ours_over_torch": tps("ours_ed_train") / tps("torch_transformer_train"),
        "train_d_fraction_of_matmul_peak": r["ours_d_train_flops"]["fraction_of_jax_peak_analytic"],
        "fast_forward_d_ours_over_gpt2": tps("ours_d_forward_fast") / tps("gpt2_forward"),
        "fast_train_d_ours_over_gpt2": tps("ours_d_train_fast") / tps("gpt2_train"),
        "fast_forward_ed_ours_over_torch": tps("ours_ed_forward_fast")
        / tps("torch_transformer_forward"),
        "fast_train_ed_ours_over_torch": tps("ours_ed_train_fast") / tps("torch_transformer_train"),
        "fast_train_d_fraction_of_matmul_peak": r["ours_d_train_flops"][
            "fraction_of_jax_peak_analytic_fast"
        ],
    }
    g = r.get("generation", {})
    if "cached" in g:
        c = g["cached"]["tokens_per_s"]
        out["generation_cached_over_hf_generate"] = c / g["hf_generate"]["tokens_per_s"]
        out["generation_cached_over_literal"] = c / g["literal"]["tokens_per_s"]
    return out


TARGETS = {
    "forward_d_ours_over_gpt2": 1.2, "train_d_ours_over_gpt2": 1.2,
    "forward_ed_ours_over_torch": 1.2, "train_ed_ours_over_torch": 1.2,
    "train_d_fraction_of_matmul_peak": 0.7,
    "fast_forward_d_ours_over_gpt2": 1.2, "fast_train_d_ours_over_gpt2": 1.2,
    "fast_forward_ed_ours_over_torch": 1.2, "fast_train_ed_ours_over_torch": 1.2,
    "fast_train_d_fraction_of_matmul_peak": 0.7,
    "generation_cached_over_hf_generate": 5.0, "generation_cached_over_literal": 20.0,
}  # fmt: skip


def table(r: dict) -> str:
    lines = [f"{'contender':34s} {'median s':>10s} {'tokens/s':>12s}"]
    names = [
        k for k in r if isinstance(r[k], dict) and "tokens_per_s" in r[k] and "threads" not in r[k]
    ]
    for name in names:
        lines.append(f"{name:34s} {r[name]['median_s']:10.4f} {r[name]['tokens_per_s']:12.1f}")
    for name, g in r.get("generation", {}).items():
        if isinstance(g, dict) and "tokens_per_s" in g and name != "hf_generate":
            s = g.get("median_s", g.get("estimated_run_s"))
            lines.append(f"{'generate: ' + name:34s} {s:10.4f} {g['tokens_per_s']:12.1f}")
    f, p = r["ours_d_train_flops"], r["matmul_peak"]
    lines.append(
        f"matmul peak (float32, GFLOP/s): jax {p['jax']['gflops']:.1f}, torch {p['torch']['gflops']:.1f}; "
        f"our D training step: {f['gflops_analytic']:.1f} GFLOP/s analytic, {f['gflops_xla']:.1f} by XLA's cost analysis"
    )
    lines.append(f"{'ratio':42s} {'value':>8s} {'target':>8s}")
    for k, v in r["ratios"].items():
        t = TARGETS.get(k)
        mark = "" if t is None else ("  met" if v >= t else "  NOT met")
        lines.append(f"{k:42s} {v:8.2f} {t if t else '':>8}{mark}")
    lines.append(
        f"load average before {r['machine']['loadavg_before']}, after {r['machine']['loadavg_after']}"
    )
    return "\n".join(lines)


def write(results: dict, json_path: str | None = None, png_path: str | None = None) -> None:
    """Write the results as JSON and/or a bar chart (matplotlib, Agg backend)."""
    if json_path:
        pathlib.Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
    if png_path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pairs = [
            ("forward\nGPT-2-like", "ours_d_forward", "gpt2_forward", "HF GPT2LMHeadModel"),
            ("train step\nGPT-2-like", "ours_d_train", "gpt2_train", "HF GPT2LMHeadModel"),
            ("forward, fast\nGPT-2-like", "ours_d_forward_fast", "gpt2_forward", "HF GPT2"),
            ("train step, fast\nGPT-2-like", "ours_d_train_fast", "gpt2_train", "HF GPT2"),
            ("forward\nseq2seq", "ours_ed_forward", "torch_transformer_forward", "nn.Transformer"),
            ("train step\nseq2seq", "ours_ed_train", "torch_transformer_train", "nn.Transformer"),
            ("train, fast\nseq2seq", "ours_ed_train_fast", "torch_transformer_train", "nn.Tr."),
        ]
        labels = [p[0] for p in pairs]
        ours = [results[p[1]]["tokens_per_s"] for p in pairs]
        theirs = [results[p[2]]["tokens_per_s"] for p in pairs]
        g = results.get("generation", {})
        if "cached" in g:
            labels.append("generate\nbatch 1")
            ours.append(g["cached"]["tokens_per_s"])
            theirs.append(g["hf_generate"]["tokens_per_s"])
        fig, ax = plt.subplots(figsize=(9, 4.5))
        xs = np.arange(len(labels))
        ax.bar(xs - 0.2, ours, 0.4, label="formal_algorithms (JAX)")
        ax.bar(xs + 0.2, theirs, 0.4, label="PyTorch / transformers")
        if "literal" in g:
            ax.bar([xs[-1] + 0.45], [g["literal"]["tokens_per_s"]], 0.25,
                   label="literal Alg 14 (ours)", color="gray")  # fmt: skip
        for x, a, b in zip(xs, ours, theirs, strict=True):
            ax.text(x, max(a, b) * 1.15, f"{a / b:.2f}×", ha="center")
        ax.set_yscale("log")
        ax.set_xticks(xs, labels)
        ax.set_ylabel("tokens / s (median)")
        m = results["machine"]
        ax.set_title(f"{m['cpus']} CPUs, load {m['loadavg_before'][0]:.1f}, float32")
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        pathlib.Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=100)
        plt.close(fig)


# ------------------------------------------------------------------------------ command line


def add_arguments(parser) -> None:
    """The benchmark's options, shared by ``benchmarks/run.py`` and ``formal-algorithms benchmark``."""
    parser.add_argument("--json", metavar="FILE.json", help="write the results here")
    parser.add_argument("--png", metavar="FILE.png", help="write a bar chart here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--skip-generation", action="store_true", help="no generation part")


def main(args) -> dict:
    """Run with parsed ``args`` (see :func:`add_arguments`), print the table, write the files."""
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    results = run(quick=args.quick, repeats=args.repeats, skip_generation=args.skip_generation)
    write(results, args.json, args.png)
    return results
