"""Conformance checks for anyone's transformer: the paper's invariants, asked of a
:class:`~formal_algorithms.testing.adapters.TokenModel` (a PyTorch, Hugging Face, JAX, Equinox,
Flax model or any function from token ids to logits).

Each check either returns a one-line account of what it verified, raises
:class:`ConformanceViolation` (an :class:`~formal_algorithms.testing.InvariantViolation`, so an
``AssertionError``) naming the invariant, the position and the size of the violation, or raises
:class:`NotApplicable` when the invariant does not apply to the model (a bidirectional encoder
has no causality to check). :func:`run_battery` runs them all and returns a
:class:`ConformanceReport` (printable, JSON-able); ``formal-algorithms check --hf DIR`` prints it.

The invariants (the paper's sections in brackets):

- ``causality`` (eq. 3, Algorithm 10): no output at position t depends on a token after t.
  Perturbation: each token s is changed alone and every output before s must stay put; gradient:
  ``∂ out[:, t] / ∂ e_s`` is exactly 0 for every s > t (and not 0 for s = t).
- ``padding_right``/``padding_left`` (Algorithm 4's Mask): the outputs at the real tokens do not
  change with the amount (1, 3) or the content (the pad id, random ids) of padding; left padding
  passes ``position_ids = cumsum(mask) − 1`` when the model takes position ids (as Hugging Face's
  ``generate`` does), and ``0 … ℓ−1`` to the unpadded reference. Gradient: real outputs have
  exactly zero gradient w.r.t. padding embeddings.
- ``batch``: a batch's outputs equal each example's alone (no statistic over the batch axis).
- ``cache`` (Algorithm 14 with a key-value cache, :mod:`formal_algorithms.practice.cache`):
  logits decoded through the model's cache (a prefill, a chunk of 2, then one token at a time)
  equal the full forward's at every position; generation with and without the cache gives the
  same tokens, greedy and sampled under a seed.
- ``batched_generation``: greedy generation of a left-padded batch equals each prompt alone.
- ``permutation`` (§5, a transformer without positions is permutation-equivariant): for an
  encoder declared without positions, permuting the tokens permutes the outputs; for an
  encoder-decoder, reordering the context leaves the decoder's outputs unchanged.
- ``distributions``: every output is finite, at real and padding positions (a fully masked
  attention row must not give NaN), and probabilities are columns in [0, 1] summing to 1
  (log-probabilities: ``logsumexp = 0``).
- ``determinism``: two forward passes agree exactly; two sampled generations under one seed agree.

Tolerance: outputs are compared to ``atol · max |reference|`` (relative to the largest output;
default ``atol = 1e-4``: float32 models differ by ~1e-7 relative between batch shapes, and the bugs
above move logits by 1e-3 to 1 relative).
Gradient checks ask for exact zeros (an attention weight of ``exp(−huge) = 0`` has gradient 0),
except under finite differences, whose threshold is ``1e-7 · max influence``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from ..paper.checks import fail
from .adapters import NotSupported, TokenModel
from .invariants import InvariantViolation

__all__ = [
    "CHECKS",
    "INVARIANTS",
    "CheckResult",
    "ConformanceReport",
    "ConformanceViolation",
    "NotApplicable",
    "check_batch",
    "check_bidirectionality",
    "check_batched_generation",
    "check_cache",
    "check_causality",
    "check_determinism",
    "check_distributions",
    "check_padding",
    "check_permutation",
    "probe_lengths",
    "run_battery",
]

INVARIANTS = {
    "causality": "no output at position t depends on a token after t",
    "padding_right": "outputs at real tokens do not depend on right padding (amount, content)",
    "padding_left": "outputs at real tokens do not depend on left padding (amount, content)",
    "batch": "a batch's outputs equal each example's computed alone",
    "cache": "cached decoding equals the full forward; generate with and without the cache agree",
    "batched_generation": "a left-padded batch generates what each prompt generates alone",
    "permutation": "without positions, permuting the tokens permutes the outputs",
    "bidirectionality": "an encoder's every output depends on every real token",
    "distributions": "outputs are finite (padding too) and describe distributions",
    "determinism": "the same input (and seed) gives the same output",
}


class ConformanceViolation(InvariantViolation):
    """An invariant fails: ``invariant`` (a key of :data:`INVARIANTS`), the ``position`` (the output
    position, 0-based, or None) and the ``size`` of the violation (max |Δ| of the outputs, or a
    gradient), in a one-line message ``"<invariant>: …"``."""

    def __init__(self, invariant: str, message: str, *, position=None, size=None):
        self.invariant, self.position = invariant, None if position is None else int(position)
        self.size = None if size is None else float(size)
        super().__init__(f"{invariant}: {message}")


class NotApplicable(Exception):
    """The invariant does not apply to this model; the message says why."""


def _violation(invariant, message, position=None, size=None):
    raise ConformanceViolation(invariant, message, position=position, size=size)


# ==================================================================================== helpers


def _rng(seed):
    return np.random.default_rng(seed)


def _tokens(model: TokenModel, rng, shape) -> np.ndarray:
    """Ordinary token ids (no pad, bos, eos, …) of ``shape``; the first 1,000 ids are plenty."""
    allowed = np.setdiff1d(np.arange(min(model.vocab_size, 1000)), model.special_ids)
    allowed = allowed[allowed != model.pad_token_id]
    return rng.choice(allowed, size=shape)


def _other(model, rng, token):
    """A token id that is not ``token`` (nor special)."""
    while True:
        t = int(_tokens(model, rng, ()))
        if t != token:
            return t


def _length(model, want, reserve=0):
    if model.max_length is None:
        return want
    return max(2, min(want, model.max_length - reserve))


def _tol(reference, atol):
    """``atol`` relative to the largest finite |output| (at least 1e-3)."""
    finite = np.abs(np.asarray(reference))[np.isfinite(reference)]
    return atol * max(1e-3, float(finite.max()) if finite.size else 1.0)


def _column_diff(got, expected):
    """Max |Δ| per column of two ``(N_V, ℓ)`` arrays (NaN where either is not finite → inf)."""
    d = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    d[~np.isfinite(d)] = np.inf
    return d.max(axis=0)


def _first_bad(diffs, tol):
    bad = np.flatnonzero(diffs > tol)
    return (int(bad[0]), float(diffs.max())) if bad.size else (None, float(diffs.max(initial=0)))


def _fmt(size):
    return "inf (not finite)" if not np.isfinite(size) else f"{size:.3g}"


def _context(model, rng, batch, length):
    if model.kind != "seq2seq":
        return None
    return _tokens(model, rng, (batch, length))


def _left_position_ids(mask):
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def _gradient_threshold(model, influence):
    if model.gradient == "finite differences":
        return 1e-7 * float(influence.max(initial=0.0))
    return 0.0


# ================================================================================== the checks


def check_causality(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """No output at position t depends on a token after t (the decoder of an encoder-decoder,
    with the context fixed): by perturbing each token alone, and by the gradient of every output
    w.r.t. every token embedding when the model has gradients (:meth:`TokenModel.influence`)."""
    if model.kind == "masked":
        raise NotApplicable(
            "a bidirectional encoder: that every position sees every token is tested by the "
            "bidirectionality check"
        )
    rng = _rng(seed)
    ell = _length(model, length)
    x, z = _tokens(model, rng, (1, ell)), _context(model, rng, 1, ell)
    base = model.logits(x, z=z)[0]
    tol = _tol(base, atol)
    for s in range(1, ell):
        x2 = x.copy()
        x2[0, s] = _other(model, rng, x[0, s])
        p, size = _first_bad(_column_diff(model.logits(x2, z=z)[0][:, :s], base[:, :s]), tol)
        if p is not None:
            _violation(
                "causality",
                f"the output at position {p} changed by {_fmt(size)} when only the token at "
                f"later position {s} changed: a later token leaks backwards (is the causal mask "
                "triangle the right way round and aligned?)",
                p, size,
            )  # fmt: skip
    done = f"{ell} positions, each token perturbed alone"
    try:
        influence = model.influence(x, z=z)[0]
    except NotSupported:
        return done + " (no gradients)"
    threshold = _gradient_threshold(model, influence)
    for t in range(ell):
        later = np.flatnonzero(influence[t, t + 1 :] > threshold)
        if later.size:
            s = t + 1 + int(later[0])
            _violation(
                "causality",
                f"the output at position {t} has gradient {influence[t, s]:.3g} with respect to "
                f"the embedding of the later token at position {s} ({model.gradient})",
                t, influence[t, s],
            )  # fmt: skip
        if influence[t, t] <= threshold:
            _violation(
                "causality",
                f"the output at position {t} does not depend on its own token (gradient 0, "
                f"{model.gradient}): is the causal mask a strict triangle?",
                t, 0.0,
            )  # fmt: skip
    return done + f", and every ∂ output[t] / ∂ e_s for s > t exactly 0 ({model.gradient})"


def check_padding(model: TokenModel, side: str = "right", *, seed: int = 0, length: int = 8,
                  atol: float = 1e-4, amounts=(1, 3)):  # fmt: skip
    """Outputs at real tokens are unchanged by padding on ``side`` (``"left"``/``"right"``) with
    an attention mask, for every amount in ``amounts`` and two contents (the pad id, random ids).
    Left padding passes ``position_ids = cumsum(mask) − 1`` when the model takes position ids.
    An encoder-decoder has its context z padded; its decoder outputs must not change."""
    invariant = f"padding_{side}"
    if side not in ("left", "right"):
        raise ValueError(f"check_padding: side must be 'left' or 'right', got {side!r}")
    if not model.accepts_attention_mask:
        raise NotApplicable("the model takes no attention_mask (it cannot be padded)")
    if (
        side == "left" and model.kind != "causal" and not model.accepts_position_ids
        and model.positions is not False
    ):  # fmt: skip
        raise NotApplicable("left padding shifts positions and the model takes no position_ids")
    rng = _rng(seed)
    ell = _length(model, length, reserve=max(amounts))
    x = _tokens(model, rng, (1, ell))
    if model.kind == "seq2seq":
        z, x_dec = x, _tokens(model, rng, (1, ell))
        ref = model.logits(x_dec, z=z)[0]
    elif side == "left" and model.accepts_position_ids:
        # Explicit 0-based positions on both sides: a model whose default positions start
        # elsewhere (RoBERTa: after the padding index) is compared with itself.
        ref = model.logits(x, position_ids=np.arange(ell)[None])[0]
    else:
        ref = model.logits(x)[0]
    tol = _tol(ref, atol)
    checked, gradients = 0, False
    for n in amounts:
        for content in ("pad-id", "random"):
            pads = (np.full((1, n), model.pad_token_id) if content == "pad-id"
                    else _tokens(model, rng, (1, n)))  # fmt: skip
            ids, mask, real = _padded(x, pads, side)
            pos = None
            if side == "left" and model.accepts_position_ids:
                pos = _left_position_ids(mask)
            if model.kind == "seq2seq":
                out = model.logits(x_dec, z=ids, z_mask=mask)[0]
                where = "decoder output"
            else:
                out = model.logits(ids, attention_mask=mask, position_ids=pos)[0][:, real]
                where = "output at real position"
            p, size = _first_bad(_column_diff(out, ref), tol)
            if p is not None:
                hint = "is the padding mask applied to the keys (the context axis)?"
                if side == "left" and model.kind != "seq2seq":
                    hint = ("are positions counted from the first real token, and padded keys "
                            "masked?")  # fmt: skip
                    if not model.accepts_position_ids:
                        hint += " (the model takes no position_ids)"
                _violation(
                    invariant,
                    f"with {n} {content} padding token(s) on the {side}, the {where} {p} "
                    f"changed by {_fmt(size)}: {hint}",
                    p, size,
                )  # fmt: skip
            if model.kind != "seq2seq":
                gradients = _padding_gradient(model, invariant, ids, mask, pos, real)
            checked += 1
    done = f"{checked} paddings ({', '.join(map(str, amounts))} tokens; pad id and random ids)"
    if model.kind == "seq2seq":
        return done
    if not gradients:
        return done + " (no gradients)"
    return done + f"; on each, gradients w.r.t. padding exactly 0 ({model.gradient})"


def _padding_gradient(model, invariant, ids, mask, pos, real) -> bool:
    """Real outputs have exactly zero gradient w.r.t. the padding embeddings; False when the model
    has no gradients."""
    try:
        influence = model.influence(ids, attention_mask=mask, position_ids=pos)[0]
    except NotSupported:
        return False
    threshold = _gradient_threshold(model, influence)
    pad_positions = np.flatnonzero(mask[0] == 0)
    for q, t in enumerate(real):
        leak = np.flatnonzero(influence[t, pad_positions] > threshold)
        if leak.size:
            s = int(pad_positions[leak[0]])
            _violation(
                invariant,
                f"the output at real position {q} has gradient {influence[t, s]:.3g} with "
                f"respect to the padding token at input position {s} ({model.gradient}): is the "
                "padding mask applied to the keys?",
                q, influence[t, s],
            )  # fmt: skip
    return True


def _padded(x, pads, side):
    n, ell = pads.shape[1], x.shape[1]
    if side == "left":
        ids = np.concatenate([pads, x], axis=1)
        mask = np.concatenate([np.zeros((1, n), int), np.ones((1, ell), int)], axis=1)
        return ids, mask, np.arange(n, n + ell)
    ids = np.concatenate([x, pads], axis=1)
    mask = np.concatenate([np.ones((1, ell), int), np.zeros((1, n), int)], axis=1)
    return ids, mask, np.arange(ell)


def check_batch(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4,
                batch: int = 3):  # fmt: skip
    """A batch of ``batch`` different sequences gives each example what it gives alone: catches
    statistics (normalisation, dropout masks, …) computed over the batch axis."""
    rng = _rng(seed)
    ell = _length(model, length)
    x, z = _tokens(model, rng, (batch, ell)), _context(model, rng, batch, ell)
    together = model.logits(x, z=z)
    for b in range(batch):
        alone = model.logits(x[b : b + 1], z=None if z is None else z[b : b + 1])[0]
        p, size = _first_bad(_column_diff(together[b], alone), _tol(alone, atol))
        if p is not None:
            _violation(
                "batch",
                f"example {b} of a batch of {batch} differs from the same example alone at "
                f"position {p} by {_fmt(size)}: is something computed over the batch axis?",
                p, size,
            )  # fmt: skip
    return f"{batch} examples of {ell} tokens, batched and alone"


def check_cache(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4,
                new_tokens: int = 6):  # fmt: skip
    """Decoding with the model's cache equals decoding without it:

    - logits through the cache (prefill ``ℓ // 3`` tokens, then a chunk of 2, then one at a time)
      equal the full forward at every position (when the adapter reaches the cache);
    - generation of ``new_tokens`` with and without the cache gives the same tokens, greedy and
      sampled under one seed (Hugging Face: ``generate(use_cache=True/False)``). A greedy
      difference at a tie (the two tokens' logits within tolerance) is not a violation.
    """
    if model.kind == "masked":
        raise NotApplicable("an encoder does not decode")
    if not model.has_cache:
        raise NotApplicable("the model has no key-value cache (forward takes no past_key_values)")
    rng = _rng(seed)
    ell = _length(model, length)
    x, z = _tokens(model, rng, (1, ell)), _context(model, rng, 1, ell)
    full = model.logits(x, z=z)[0]
    chunks = (max(1, ell // 3), 2)
    cached = model.cached_logits(x, chunks, z=z)[0]
    p, size = _first_bad(_column_diff(cached, full), _tol(full, atol))
    if p is not None:
        _violation(
            "cache",
            f"the output at position {p} decoded with the cache (prefill {chunks[0]}, a chunk of "
            f"{chunks[1]}, then single tokens) differs from the full forward by {_fmt(size)}: "
            "does the new token get position cache_length + i, and is the causal mask aligned "
            "to the last key (and the relative-position bias to absolute positions)?",
            p, size,
        )  # fmt: skip
    prompt = _tokens(model, rng, (1, _length(model, 4, reserve=new_tokens)))
    seedless = _sampler_ignores_seed(model, prompt, new_tokens, seed, z)
    for sample in (False,) if seedless else (False, True):
        kw = {"sample": sample, "seed": seed, "z": z, "return_logits": True}
        with_cache, logits_with = model.generate(prompt, new_tokens, use_cache=True, **kw)
        without, logits_without = model.generate(prompt, new_tokens, use_cache=False, **kw)
        i = _first_difference(with_cache[0], without[0])
        how = f"sampled generation (seed {seed})" if sample else "greedy generation"
        step, size = _first_step_apart(logits_with, logits_without, 0, i, prompt.shape[1], atol)
        if step is not None:
            _violation(
                "cache",
                f"{how}: at position {prompt.shape[1] + step} the logits chosen from with the "
                f"cache differ from those without by {_fmt(size)}",
                prompt.shape[1] + step, size,
            )  # fmt: skip
        if i is None or logits_with is not None:  # equal logits: a tie or a sampling boundary
            continue
        if not sample and _is_tie(model, without[:, :i], z, with_cache[0, i], without[0, i], atol):
            continue
        _violation(
            "cache",
            f"{how} with the cache chose token {with_cache[0, i]} at position {i}, without the "
            f"cache token {without[0, i]}",
            i, None,
        )  # fmt: skip
    done = f"{ell} positions through the cache; {new_tokens} generated tokens"
    if seedless:
        return done + (f", greedy, with and without the cache; sampled generation not compared: "
                       f"two sampled generations with seed {seed} and the cache differ (the "
                       "sampler ignores its seed: see determinism)")  # fmt: skip
    return done + ", greedy and sampled, with and without the cache"


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
    return _first_bad(_column_diff(a, b), _tol(b, atol))


def _first_difference(a, b):
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    if diff.size:
        return int(diff[0])
    return None if len(a) == len(b) else n


def _is_tie(model, prefix, z, a, b, atol):
    column = model.logits(prefix, z=z)[0][:, -1]
    return abs(column[a] - column[b]) <= _tol(column, atol)


def check_batched_generation(model: TokenModel, *, seed: int = 0, length: int = 6,
                             atol: float = 1e-4, new_tokens: int = 5):  # fmt: skip
    """Greedy generation of a left-padded batch (prompts of ℓ and ℓ − 2 tokens, an attention
    mask) gives each prompt's continuation alone (bug classes 4 and 8: left padding unmasked, or
    positions counted from the padding)."""
    if model.kind != "causal":
        raise NotApplicable("only a decoder-only model generates from a left-padded batch")
    if not model.accepts_attention_mask:
        raise NotApplicable("the model takes no attention_mask (it cannot be padded)")
    rng = _rng(seed)
    ell = _length(model, length, reserve=new_tokens)
    short = max(1, ell - 2)
    prompts = [_tokens(model, rng, (1, ell)), _tokens(model, rng, (1, short))]
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
        alone, logits_alone = model.generate(p, new_tokens, use_cache=use_cache,
                                             return_logits=True)  # fmt: skip
        got, want = together[b, ell:], alone[0, p.shape[1] :]
        i = _first_difference(got, want)
        step, size = _first_step_apart(logits_together, logits_alone, b, i, 0, atol)
        if step is not None:
            _violation(
                "batched_generation",
                f"prompt {b} ({p.shape[1]} tokens, {ell - p.shape[1]} of left padding): at "
                f"generation step {step} the logits in the batch differ from those alone by "
                f"{_fmt(size)}: are padded keys masked and positions counted from the first real "
                "token?",
                p.shape[1] + step, size,
            )  # fmt: skip
        if i is None or logits_together is not None:  # equal logits: a tie
            continue
        if _is_tie(model, alone[:, : p.shape[1] + i], None, got[i], want[i], atol):
            continue
        _violation(
            "batched_generation",
            f"prompt {b} ({p.shape[1]} tokens, {ell - p.shape[1]} of left padding) generated "
            f"token {got[i]} at step {i} in the batch, token {want[i]} alone: are padded keys "
            "masked and positions counted from the first real token?",
            p.shape[1] + i, None,
        )  # fmt: skip
    return f"2 prompts ({ell} and {short} tokens) left-padded, {new_tokens} greedy tokens each"


def check_permutation(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """For a model without positions (``positions=False``): an encoder's outputs are permuted
    with its tokens, ``f(x[π])[:, t] = f(x)[:, π(t)]``; an encoder-decoder's decoder outputs do
    not change when the context is reordered (cross-attention reads a set)."""
    if model.positions is not False:
        raise NotApplicable("the model uses token positions (declare positions=False if not)")
    if model.kind == "causal":
        raise NotApplicable("a causal decoder is not permutation-equivariant")
    rng = _rng(seed)
    ell = _length(model, length)
    x = _tokens(model, rng, (1, ell))
    perm = rng.permutation(ell)
    if model.kind == "masked":
        base = model.logits(x)[0]
        p, size = _first_bad(_column_diff(model.logits(x[:, perm])[0], base[:, perm]),
                             _tol(base, atol))  # fmt: skip
        if p is not None:
            _violation(
                "permutation",
                f"permuting the tokens by {perm.tolist()} did not permute the outputs: position "
                f"{p} differs by {_fmt(size)} (a mask or a position that the model should not "
                "have?)",
                p, size,
            )  # fmt: skip
        return f"{ell} tokens permuted by {perm.tolist()}"
    x_dec = _tokens(model, rng, (1, ell))
    base = model.logits(x_dec, z=x)[0]
    p, size = _first_bad(_column_diff(model.logits(x_dec, z=x[:, perm])[0], base),
                         _tol(base, atol))  # fmt: skip
    if p is not None:
        _violation(
            "permutation",
            f"reordering the context by {perm.tolist()} changed the decoder output at position "
            f"{p} by {_fmt(size)}",
            p, size,
        )  # fmt: skip
    return f"a context of {ell} tokens reordered by {perm.tolist()}"


def check_bidirectionality(model: TokenModel, *, seed: int = 0, length: int = 8,
                           atol: float = 1e-4):  # fmt: skip
    """An encoder (``kind="masked"``) sees every token: changing the token at any position s moves
    every output (exactly 0 change means position t does not read s); an encoder-decoder's
    decoder outputs each move when any context token changes. ``atol`` is unused: any change
    counts (a strictly causal model moves earlier outputs by exactly 0)."""
    del atol
    if model.kind == "causal":
        raise NotApplicable("a causal decoder must not see later tokens (the causality check)")
    rng = _rng(seed)
    ell = _length(model, length)
    x = _tokens(model, rng, (1, ell))
    x_dec = _tokens(model, rng, (1, ell)) if model.kind == "seq2seq" else None

    def run(ids):
        return model.logits(ids)[0] if x_dec is None else model.logits(x_dec, z=ids)[0]

    base = run(x)
    for s in range(ell):
        x2 = x.copy()
        x2[0, s] = _other(model, rng, x[0, s])
        still = np.flatnonzero(_column_diff(run(x2), base) == 0)
        if still.size:
            t = int(still[0])
            what = "the decoder output" if x_dec is not None else "the output"
            _violation(
                "bidirectionality",
                f"{what} at position {t} did not move at all when the token at position {s} "
                "changed: it does not see that token (a causal mask, or is_decoder=True, in an "
                "encoder?)",
                t, 0.0,
            )  # fmt: skip
    return f"{ell} tokens each perturbed alone moved all {ell} outputs"


def check_distributions(model: TokenModel, *, seed: int = 0, length: int = 8,
                        atol: float = 1e-4):  # fmt: skip
    """Every output is finite, at real tokens and at padding (padded on the right, and on the
    left for a decoder); ``output="probs"``: entries in [0, 1], each position's column sums to 1;
    ``output="log_probs"``: each column's logsumexp is 0."""
    rng = _rng(seed)
    ell = _length(model, length, reserve=3)
    x, z = _tokens(model, rng, (2, ell)), _context(model, rng, 2, ell)
    cases = [("", model.logits(x, z=z), np.ones_like(x))]
    if model.accepts_attention_mask and model.kind != "seq2seq":
        sides = ["right", "left"] if model.kind == "causal" else ["right"]
        for side in sides:
            pads = np.full((1, 3), model.pad_token_id)
            ids, mask, _ = _padded(x[:1], pads, side)
            pos = (
                _left_position_ids(mask) if side == "left" and model.accepts_position_ids else None
            )
            cases.append((f" with {side} padding", model.logits(ids, attention_mask=mask,
                                                                 position_ids=pos), mask))  # fmt: skip
    for what, out, mask in cases:
        finite = np.isfinite(out).all(axis=1)  # (B, ℓ)
        if not finite.all():
            b, p = np.argwhere(~finite)[0]
            where = "a padding position" if mask[b, p] == 0 else "a real token"
            _violation(
                "distributions",
                f"the output at position {p} ({where}){what} is not finite: a fully masked "
                "attention row (softmax over nothing but −inf)?",
                p, float("inf"),
            )  # fmt: skip
        real = out.transpose(0, 2, 1)[mask == 1]  # (n, N_V)
        if model.output == "probs":
            low = float(real.min())
            if low < -atol:
                p = int(np.argwhere(out.min(axis=1) < -atol)[0][1])
                _violation("distributions", f"a probability at position {p} is {low:.3g} < 0",
                           p, -low)  # fmt: skip
            sums = out.sum(axis=1)  # (B, ℓ)
            err = np.abs(sums - 1) * (mask == 1)
            if err.max() > atol:
                b, p = np.unravel_index(np.argmax(err), err.shape)
                _violation(
                    "distributions",
                    f"the column at position {p}{what} sums to {sums[b, p]:.6g}, not 1: is the "
                    "softmax over the wrong axis?",
                    p, err.max(),
                )  # fmt: skip
        elif model.output == "log_probs":
            m = out.max(axis=1, keepdims=True)
            lse = (m + np.log(np.exp(out - m).sum(axis=1, keepdims=True)))[:, 0]
            err = np.abs(lse) * (mask == 1)
            if err.max() > atol:
                b, p = np.unravel_index(np.argmax(err), err.shape)
                _violation(
                    "distributions",
                    f"the log-probabilities at position {p}{what} have logsumexp "
                    f"{lse[b, p]:.6g}, not 0",
                    p, err.max(),
                )  # fmt: skip
    return f"{len(cases)} input{'s' if len(cases) > 1 else ''}, every output finite" + (
        "" if model.output == "logits" else f", {model.output} normalised per position"
    )


def check_determinism(model: TokenModel, *, seed: int = 0, length: int = 8, new_tokens: int = 5):
    """Two forward passes on one input agree exactly (a forward pass in eval mode is a function:
    no dropout), and two sampled generations under one seed agree."""
    rng = _rng(seed)
    ell = _length(model, length, reserve=new_tokens)
    x, z = _tokens(model, rng, (2, ell)), _context(model, rng, 2, ell)
    first, second = model.logits(x, z=z), model.logits(x, z=z)
    diffs = np.maximum(_column_diff(first[0], second[0]), _column_diff(first[1], second[1]))
    p, size = _first_bad(diffs, 0.0)
    if p is not None:
        _violation(
            "determinism",
            f"two forward passes on the same input differ at position {p} by {_fmt(size)}: is "
            "dropout on (model.eval() not called) or an unseeded random source used?",
            p, size,
        )  # fmt: skip
    if not model.can_generate:
        return "two forward passes identical"
    use_cache = model.has_cache
    prompt, z1 = x[:1, : max(1, ell // 2)], None if z is None else z[:1]
    a = model.generate(prompt, new_tokens, use_cache=use_cache, sample=True, seed=seed, z=z1)
    b = model.generate(prompt, new_tokens, use_cache=use_cache, sample=True, seed=seed, z=z1)
    i = _first_difference(a[0], b[0])
    if i is not None:
        _violation(
            "determinism",
            f"two sampled generations with seed {seed} differ at position {i} (tokens "
            f"{a[0, i]} and {b[0, i]}): does the sampler use an unseeded random source?",
            i, None,
        )  # fmt: skip
    return f"two forward passes identical; two sampled generations with seed {seed} identical"


# ============================================================================= the preconditions


def _unpadded_outputs(model, seed, length):
    rng = _rng(seed)
    ell = _length(model, length)
    x, z = _tokens(model, rng, (2, ell)), _context(model, rng, 2, ell)
    return model.logits(x, z=z), model.logits(x, z=z)


def precondition_finite(first) -> str:
    """The outputs on an ordinary unpadded input are finite; else no difference is meaningful."""
    bad = ~np.isfinite(first)  # (B, N_V, ℓ)
    if bad.any():
        b, v, p = np.argwhere(bad)[0]
        rows = np.unique(np.argwhere(bad)[:, 1])
        _violation(
            "finite",
            f"the output at position {p} of an unpadded input is not finite ({first[b, v, p]} at "
            f"vocabulary entry {v}; {rows.size} of {first.shape[1]} entries affected): NaN or inf "
            "in the parameters?",
            p, float("inf"),
        )  # fmt: skip
    return f"{first.shape[0]} unpadded inputs of {first.shape[2]} tokens, every output finite"


def precondition_deterministic(first, second) -> str:
    """Two forward passes on one input agree exactly (no dropout, no unseeded randomness)."""
    diffs = np.maximum(_column_diff(first[0], second[0]), _column_diff(first[1], second[1]))
    p, size = _first_bad(diffs, 0.0)
    if p is not None:
        _violation(
            "deterministic",
            f"two forward passes on the same input differ at position {p} by {_fmt(size)}: is "
            "dropout on (model.eval() not called) or an unseeded random source used?",
            p, size,
        )  # fmt: skip
    return "two forward passes on one input identical"


PRECONDITIONS = {
    "finite": "outputs on an ordinary unpadded input are finite",
    "deterministic": "two forward passes on one input agree exactly",
}

# The checks each precondition's failure makes meaningless (they compare outputs).
_COMPARING = ("causality", "padding_right", "padding_left", "batch", "cache",
              "batched_generation", "permutation", "bidirectionality")  # fmt: skip
INVALIDATES = {"finite": (*_COMPARING, "determinism"), "deterministic": _COMPARING}


# ================================================================================== the battery

CHECKS = {
    "causality": check_causality,
    "bidirectionality": check_bidirectionality,
    "padding_right": lambda model, **kw: check_padding(model, "right", **kw),
    "padding_left": lambda model, **kw: check_padding(model, "left", **kw),
    "batch": check_batch,
    "cache": check_cache,
    "batched_generation": check_batched_generation,
    "permutation": check_permutation,
    "distributions": check_distributions,
    "determinism": check_determinism,
}

STATUSES = ("pass", "fail", "skip", "error", "not meaningful")
_LABELS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR",
           "not meaningful": "N/M"}  # fmt: skip


@dataclass
class CheckResult:
    """One check's outcome: ``status`` is ``"pass"``, ``"fail"`` (an invariant violated),
    ``"skip"`` (not applicable; ``message`` says why), ``"error"`` (the check could not run) or
    ``"not meaningful"`` (a precondition failed; ``message`` says which)."""

    check: str
    invariant: str
    status: str
    message: str
    position: int | None = None
    size: float | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class ConformanceReport:
    """What :func:`run_battery` found. ``verdict`` is ``"conforms"`` (the preconditions hold, at
    least one check passed, none failed, errored or was made meaningless), ``"violates"`` (a
    precondition or a check failed, or a check errored) or ``"unverified"`` (nothing failed, but no
    check passed: every one skipped, or none asked); ``ok`` is ``verdict == "conforms"``."""

    model: str
    kind: str
    framework: str
    results: list[CheckResult] = field(default_factory=list)
    preconditions: list[CheckResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        everything = self.preconditions + self.results
        if any(r.status in ("fail", "error", "not meaningful") for r in everything):
            return "violates"
        if not any(r.status == "pass" for r in self.results):
            return "unverified"
        return "conforms"

    @property
    def ok(self) -> bool:
        return self.verdict == "conforms"

    def failures(self) -> list[CheckResult]:
        return [r for r in self.preconditions + self.results if r.status in ("fail", "error")]

    def __getitem__(self, check: str) -> CheckResult:
        for r in self.preconditions + self.results:
            if r.check == check:
                return r
        raise KeyError(check)

    def to_dict(self) -> dict:
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        size = lambda v: v if v is None or np.isfinite(v) else str(v)  # noqa: E731
        row = lambda r: {**asdict(r), "size": size(r.size), "seconds": round(r.seconds, 3)}  # noqa: E731
        return {
            "model": self.model, "kind": self.kind, "framework": self.framework, "ok": self.ok,
            "verdict": self.verdict, "counts": counts,
            "preconditions": [row(r) for r in self.preconditions],
            "results": [row(r) for r in self.results],
        }  # fmt: skip

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kw)

    def __str__(self) -> str:
        width = max(len(c) for c in [*CHECKS, *PRECONDITIONS])
        lines = [f"{self.model} ({self.kind}, {self.framework})"]
        for r in self.preconditions + self.results:
            lines.append(f"  {_LABELS[r.status]:5} {r.check:{width}}  {r.message}")
            lines.extend(f"  {'':5} {'':{width}}  (warning) {w}" for w in r.warnings)
        c = self.to_dict()["counts"]
        verdict = {
            "conforms": "conforms",
            "violates": "VIOLATES the invariants above",
            "unverified": "NOT VERIFIED: no check passed (every one skipped or none asked)",
        }[self.verdict]
        if any(r.status == "fail" for r in self.preconditions):
            verdict = "PRECONDITION FAILED (first lines): the checks marked N/M are not meaningful"
        lines.append(f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped, "
                     f"{c['error']} errors, {c['not meaningful']} not meaningful: {verdict}")  # fmt: skip
        return "\n".join(lines)


def _check_battery_arguments(model, checks, seed, length, atol):
    where = "run_battery"
    if not isinstance(model, TokenModel):
        fail(where, "model", "must be a TokenModel (see formal_algorithms.testing.adapters), got "
             f"{type(model).__name__}", TypeError)  # fmt: skip
    if isinstance(checks, str):
        fail(where, "checks", f"must be a list of check names, got the string {checks!r}",
             TypeError)  # fmt: skip
    names = list(CHECKS) if checks is None else list(checks)
    if not names:
        fail(where, "checks", f"is empty; choose from {list(CHECKS)}")
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        fail(where, "checks", f"{unknown} unknown; choose from {list(CHECKS)}")
    if isinstance(atol, bool) or not isinstance(atol, int | float) or not np.isfinite(atol) \
            or atol <= 0:  # fmt: skip
        fail(where, "atol", f"must be a finite number > 0, got {atol!r}")
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 2:
        fail(where, "length", f"must be an integer ≥ 2, got {length!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        fail(where, "seed", f"must be an integer, got {seed!r}", TypeError)
    return names


LONG = 20  # the long probe: beyond 16 tokens, where bugs of blocked or bucketed code appear
BOUNDARY_LIMIT = 64  # declared boundaries (maximum positions) probed up to this many tokens


def probe_lengths(model: TokenModel, length: int = 8) -> list[int]:
    """The lengths each check runs at: ``length`` (the short probe), :data:`LONG`, one token past
    the model's sliding window when it declares one, and its maximum length when that is at most
    :data:`BOUNDARY_LIMIT`; all capped at the maximum length."""
    wanted = {length, LONG}
    if model.sliding_window is not None:
        wanted.add(model.sliding_window + 1)
    if model.max_length is not None:
        if model.max_length <= BOUNDARY_LIMIT:
            wanted.add(model.max_length)
        wanted = {min(n, model.max_length) for n in wanted}
    return sorted(wanted)


def run_battery(model: TokenModel, *, checks=None, seed: int = 0, length: int = 8,
                atol: float = 1e-4, progress=None, lengths=None) -> ConformanceReport:  # fmt: skip
    """Check the preconditions (``finite``, ``deterministic``), then run ``checks`` (names from
    :data:`CHECKS`; default all) on ``model``, and return the report.

    A failed precondition is reported first, and the checks it invalidates
    (:data:`INVALIDATES`) are not run: they are ``"not meaningful"`` with the reason. A check that
    raises anything but a violation or :class:`NotApplicable` is reported as ``"error"`` with the
    exception's message; ``progress(name)`` is called before each check.

    Each check runs at every length of ``lengths`` (default :func:`probe_lengths`: ``length``,
    one beyond 16 tokens, the declared boundaries) and stops at the first that does not pass; its
    message begins with that length (``"ℓ = 20: …"``). The preconditions run at ``length``."""
    names = _check_battery_arguments(model, checks, seed, length, atol)
    if lengths is None:
        lengths = probe_lengths(model, length)
    for n in lengths:
        _check_battery_arguments(model, names, seed, n, atol)
    report = ConformanceReport(model.name, model.kind, model.framework)
    invalid = _run_preconditions(model, report, seed, length, progress)
    for name in names:
        if name in invalid:
            report.results.append(CheckResult(name, INVARIANTS[name], "not meaningful",
                                              invalid[name]))  # fmt: skip
            continue
        kwargs = {"seed": seed} if name == "determinism" else {"seed": seed, "atol": atol}
        report.results.append(_at_lengths(name, model, kwargs, lengths, progress))
    return report


def _at_lengths(name, model, kwargs, lengths, progress) -> CheckResult:
    """``name`` at each length until one does not pass; its message begins with the length."""
    seconds, seen, details = 0.0, [], []
    for n in lengths:
        result = _timed(name, lambda n=n: CHECKS[name](model, length=n, **kwargs),
                        INVARIANTS[name], progress)  # fmt: skip
        seconds, seen = seconds + result.seconds, seen + result.warnings
        if result.status != "pass":
            if result.status != "skip" or details:  # a skip applies to every length
                result.message = f"ℓ = {n}: {result.message}"
            break
        details.append(f"ℓ = {n}: {result.message}")
    else:
        result.message = "; ".join(details) if len(details) > 1 else result.message
    result.seconds, result.warnings = seconds, sorted(set(seen))
    return result


def _run_preconditions(model, report, seed, length, progress):
    """Run the preconditions into ``report``; the checks they invalidate, with the reason."""
    outputs = {}

    def finite():
        outputs["pair"] = _unpadded_outputs(model, seed, length)
        return precondition_finite(outputs["pair"][0])

    def deterministic():
        if "pair" not in outputs:
            raise NotApplicable("the forward pass could not run (see finite)")
        return precondition_deterministic(*outputs["pair"])

    invalid = {}
    for name, run in (("finite", finite), ("deterministic", deterministic)):
        if any(r.status == "fail" and r.check == "finite" for r in report.preconditions):
            reason = "not checked: the outputs are not finite"
            report.preconditions.append(CheckResult(name, PRECONDITIONS[name], "skip", reason))
            continue
        result = _timed(name, run, PRECONDITIONS[name], progress)
        report.preconditions.append(result)
        if result.status == "fail":
            for check in INVALIDATES[name]:
                invalid.setdefault(check, f"not meaningful: precondition {name!r} failed "
                                   f"({PRECONDITIONS[name]} does not hold)")  # fmt: skip
    return invalid


def _timed(name, run, invariant, progress) -> CheckResult:
    if progress is not None:
        progress(name)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # the model's warnings go into the report
        result = _run_one(name, run, invariant)
    result.seconds = time.perf_counter() - start
    result.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in seen})
    return result


def _run_one(name, run, invariant) -> CheckResult:
    try:
        return CheckResult(name, invariant, "pass", run())
    except ConformanceViolation as v:
        return CheckResult(name, invariant, "fail", str(v).split(": ", 1)[1], v.position, v.size)
    except (NotApplicable, NotSupported) as reason:
        return CheckResult(name, invariant, "skip", str(reason))
    except Exception as error:  # noqa: BLE001 (the report names it; the battery goes on)
        return CheckResult(name, invariant, "error", f"{type(error).__name__}: {error}")
