"""The conformance checks of decoding and outputs: cached decoding equals the full forward
(Algorithm 14 with a cache), a left-padded batch generates what each prompt does alone, outputs
are finite distributions, and the same input (and seed) gives the same output. Each returns what
it verified or raises :class:`.probing.ConformanceViolation` or :class:`.probing.NotApplicable`;
:mod:`.conformance` runs them."""

from __future__ import annotations

import numpy as np

from . import probing as P
from .adapters import TokenModel
from .arguments import checked


@checked
def check_cache(
    model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4, new_tokens: int = 6
):
    """Decoding with the model's cache equals decoding without it:

    - logits through the cache (prefill ``ℓ // 3`` tokens, then a chunk of 2, then one at a time)
      equal the full forward at every position (when the adapter reaches the cache);
    - generation of ``new_tokens`` with and without the cache gives the same tokens, greedy and
      sampled under one seed (Hugging Face: ``generate(use_cache=True/False)``). A greedy
      difference at a tie (the two tokens' logits within tolerance) is not a violation.
    """
    if model.kind == "masked":
        raise P.NotApplicable("an encoder does not decode")
    if not model.has_cache:
        raise P.NotApplicable("the model has no key-value cache (forward takes no past_key_values)")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x, z = P.random_tokens(model, rng, (1, ell)), P.random_context(model, rng, 1, ell)
    _check_cached_logits(model, x, z, atol)
    prompt = P.random_tokens(model, rng, (1, P.probe_length(model, 4, reserve=new_tokens)))
    seedless = _sampler_ignores_seed(model, prompt, new_tokens, seed, z)
    for sample in (False,) if seedless else (False, True):
        _check_cached_generation(model, prompt, new_tokens, sample, seed, z, atol)
    done = f"{ell} positions through the cache; {new_tokens} generated tokens"
    if seedless:
        return done + (
            f", greedy, with and without the cache; sampled generation not compared: "
            f"two sampled generations with seed {seed} and the cache differ (the "
            "sampler ignores its seed: see determinism)"
        )
    return done + ", greedy and sampled, with and without the cache"


def _check_cached_logits(model, x, z, atol) -> None:
    """Logits through the cache (a prefill of ℓ // 3, a chunk of 2, then one at a time) equal the
    full forward's at every position."""
    full = model.logits(x, z=z)[0]
    chunks = (max(1, x.shape[1] // 3), 2)
    cached = model.cached_logits(x, chunks, z=z)[0]
    p, size = P.first_bad(P.column_diff(cached, full), P.tolerance_of(full, atol))
    if p is not None:
        P.violation(
            "cache",
            f"the output at position {p} decoded with the cache (prefill {chunks[0]}, a chunk of "
            f"{chunks[1]}, then single tokens) differs from the full forward by {P.fmt_size(size)}: "
            "does the new token get position cache_length + i, and is the causal mask aligned "
            "to the last key (and the relative-position bias to absolute positions)?",
            p,
            size,
        )


def _check_cached_generation(model, prompt, new_tokens, sample, seed, z, atol) -> None:
    """Generation with and without the cache chooses the same tokens from the same logits (a
    greedy difference at a tie is not a violation)."""
    kw = {"sample": sample, "seed": seed, "z": z, "return_logits": True}
    with_cache, logits_with = model.generate(prompt, new_tokens, use_cache=True, **kw)
    without, logits_without = model.generate(prompt, new_tokens, use_cache=False, **kw)
    i = _first_difference(with_cache[0], without[0])
    how = f"sampled generation (seed {seed})" if sample else "greedy generation"
    step, size = _first_step_apart(logits_with, logits_without, 0, i, prompt.shape[1], atol)
    if step is not None:
        P.violation(
            "cache",
            f"{how}: at position {prompt.shape[1] + step} the logits chosen from with the "
            f"cache differ from those without by {P.fmt_size(size)}",
            prompt.shape[1] + step,
            size,
        )
    if i is None or logits_with is not None:  # equal logits: a tie or a sampling boundary
        return
    if not sample and _is_tie(model, without[:, :i], z, with_cache[0, i], without[0, i], atol):
        return
    P.violation(
        "cache",
        f"{how} with the cache chose token {with_cache[0, i]} at position {i}, without the "
        f"cache token {without[0, i]}",
        i,
        None,
    )


def _sampler_ignores_seed(model, prompt, new_tokens, seed, z) -> bool:
    """Two sampled generations with the cache under one seed differ: a comparison of sampled
    generations with and without the cache would blame the cache for the sampler."""
    kw = {"use_cache": True, "sample": True, "seed": seed, "z": z}
    first, second = (
        model.generate(prompt, new_tokens, **kw),
        model.generate(prompt, new_tokens, **kw),
    )
    return _first_difference(first[0], second[0]) is not None


def _first_step_apart(logits_a, logits_b, row, first_token_difference, prompt_length, atol):
    """The first generation step (0-based) whose logits differ beyond tolerance, up to the first
    step where the chosen tokens differ (after it the two runs continue different texts)."""
    if logits_a is None or logits_b is None:
        return None, None
    steps = logits_a.shape[1]
    if first_token_difference is not None:
        steps = min(steps, first_token_difference - prompt_length + 1)
    a, b = logits_a[row, :steps].T, logits_b[-1 if logits_b.shape[0] == 1 else row, :steps].T
    return P.first_bad(P.column_diff(a, b), P.tolerance_of(b, atol))


def _first_difference(a, b):
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    if diff.size:
        return int(diff[0])
    return None if len(a) == len(b) else n


def _is_tie(model, prefix, z, a, b, atol):
    column = model.logits(prefix, z=z)[0][:, -1]
    return abs(column[a] - column[b]) <= P.tolerance_of(column, atol)


@checked
def check_batched_generation(
    model: TokenModel, *, seed: int = 0, length: int = 6, atol: float = 1e-4, new_tokens: int = 5
):
    """Greedy generation of a left-padded batch (prompts of ℓ and ℓ − 2 tokens, an attention
    mask) gives each prompt's continuation alone (bug classes 4 and 8: left padding unmasked, or
    positions counted from the padding)."""
    if model.kind != "causal":
        raise P.NotApplicable("only a decoder-only model generates from a left-padded batch")
    if not model.accepts_attention_mask:
        raise P.NotApplicable("the model takes no attention_mask (it cannot be padded)")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length, reserve=new_tokens)
    short = max(1, ell - 2)
    prompts = [P.random_tokens(model, rng, (1, ell)), P.random_tokens(model, rng, (1, short))]
    ids = np.full((2, ell), model.pad_token_id)
    mask = np.zeros((2, ell), int)
    for b, p in enumerate(prompts):
        ids[b, ell - p.shape[1] :], mask[b, ell - p.shape[1] :] = p[0], 1
    # The model's own generate (Hugging Face) pads with its cache; this module's loop without.
    use_cache = model.has_own_generate
    together, logits_together = model.generate(
        ids, new_tokens, attention_mask=mask, use_cache=use_cache, return_logits=True
    )
    for b, p in enumerate(prompts):
        alone, logits_alone = model.generate(p, new_tokens, use_cache=use_cache, return_logits=True)
        got, want = together[b, ell:], alone[0, p.shape[1] :]
        i = _first_difference(got, want)
        step, size = _first_step_apart(logits_together, logits_alone, b, i, 0, atol)
        if step is not None:
            P.violation(
                "batched_generation",
                f"prompt {b} ({p.shape[1]} tokens, {ell - p.shape[1]} of left padding): at "
                f"generation step {step} the logits in the batch differ from those alone by "
                f"{P.fmt_size(size)}: are padded keys masked and positions counted from the first real "
                "token?",
                p.shape[1] + step,
                size,
            )
        if i is None or logits_together is not None:  # equal logits: a tie
            continue
        if _is_tie(model, alone[:, : p.shape[1] + i], None, got[i], want[i], atol):
            continue
        P.violation(
            "batched_generation",
            f"prompt {b} ({p.shape[1]} tokens, {ell - p.shape[1]} of left padding) generated "
            f"token {got[i]} at step {i} in the batch, token {want[i]} alone: are padded keys "
            "masked and positions counted from the first real token?",
            p.shape[1] + i,
            None,
        )
    return f"2 prompts ({ell} and {short} tokens) left-padded, {new_tokens} greedy tokens each"


@checked
def check_distributions(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """Every output is finite, at real tokens and at padding (padded on the right, and on the
    left for a decoder); ``output="probs"``: entries in [0, 1], each position's column sums to 1;
    ``output="log_probs"``: each column's logsumexp is 0."""
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length, reserve=3)
    x, z = P.random_tokens(model, rng, (2, ell)), P.random_context(model, rng, 2, ell)
    cases = [("", model.logits(x, z=z), np.ones_like(x)), *_padded_cases(model, x)]
    for what, out, mask in cases:
        _check_finite(out, mask, what)
        if model.output == "probs":
            _check_probabilities(out, mask, what, atol)
        elif model.output == "log_probs":
            _check_log_probabilities(out, mask, what, atol)
    return f"{len(cases)} input{'s' if len(cases) > 1 else ''}, every output finite" + (
        "" if model.output == "logits" else f", {model.output} normalised per position"
    )


def _padded_cases(model, x):
    """The first example padded with 3 pad ids on the right (and the left, for a decoder):
    ``(what, outputs, mask)`` each."""
    if not model.accepts_attention_mask or model.kind == "seq2seq":
        return []
    cases = []
    for side in ["right", "left"] if model.kind == "causal" else ["right"]:
        ids, mask, _ = P.padded(x[:1], np.full((1, 3), model.pad_token_id), side)
        pos = P.left_position_ids(mask) if side == "left" and model.accepts_position_ids else None
        out = model.logits(ids, attention_mask=mask, position_ids=pos)
        cases.append((f" with {side} padding", out, mask))
    return cases


def _check_finite(out, mask, what) -> None:
    finite = np.isfinite(out).all(axis=1)  # (B, ℓ)
    if not finite.all():
        b, p = np.argwhere(~finite)[0]
        where = "a padding position" if mask[b, p] == 0 else "a real token"
        P.violation(
            "distributions",
            f"the output at position {p} ({where}){what} is not finite: a fully masked "
            "attention row (softmax over nothing but −inf)?",
            p,
            float("inf"),
        )


def _check_probabilities(out, mask, what, atol) -> None:
    """Entries in [0, 1] at real tokens, each column summing to 1."""
    low = float(out.transpose(0, 2, 1)[mask == 1].min())
    if low < -atol:
        p = int(np.argwhere(out.min(axis=1) < -atol)[0][1])
        P.violation("distributions", f"a probability at position {p} is {low:.3g} < 0", p, -low)
    sums = out.sum(axis=1)  # (B, ℓ)
    err = np.abs(sums - 1) * (mask == 1)
    if err.max() > atol:
        b, p = np.unravel_index(np.argmax(err), err.shape)
        P.violation(
            "distributions",
            f"the column at position {p}{what} sums to {sums[b, p]:.6g}, not 1: is the "
            "softmax over the wrong axis?",
            p,
            err.max(),
        )


def _check_log_probabilities(out, mask, what, atol) -> None:
    """Each real column's logsumexp is 0."""
    m = out.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(out - m).sum(axis=1, keepdims=True)))[:, 0]
    err = np.abs(lse) * (mask == 1)
    if err.max() > atol:
        b, p = np.unravel_index(np.argmax(err), err.shape)
        P.violation(
            "distributions",
            f"the log-probabilities at position {p}{what} have logsumexp {lse[b, p]:.6g}, not 0",
            p,
            err.max(),
        )


@checked
def check_determinism(model: TokenModel, *, seed: int = 0, length: int = 8, new_tokens: int = 5):
    """Two forward passes on one input agree exactly (a forward pass in eval mode is a function:
    no dropout), and two sampled generations under one seed agree."""
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length, reserve=new_tokens)
    x, z = P.random_tokens(model, rng, (2, ell)), P.random_context(model, rng, 2, ell)
    first, second = model.logits(x, z=z), model.logits(x, z=z)
    P.check_same_forward("determinism", first, second)
    if not model.can_generate:
        return "two forward passes identical"
    use_cache = model.has_cache
    prompt, z1 = x[:1, : max(1, ell // 2)], None if z is None else z[:1]
    a = model.generate(prompt, new_tokens, use_cache=use_cache, sample=True, seed=seed, z=z1)
    b = model.generate(prompt, new_tokens, use_cache=use_cache, sample=True, seed=seed, z=z1)
    i = _first_difference(a[0], b[0])
    if i is not None:
        P.violation(
            "determinism",
            f"two sampled generations with seed {seed} differ at position {i} (tokens "
            f"{a[0, i]} and {b[0, i]}): does the sampler use an unseeded random source?",
            i,
            None,
        )
    return f"two forward passes identical; two sampled generations with seed {seed} identical"
