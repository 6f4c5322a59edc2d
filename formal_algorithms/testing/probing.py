"""What every conformance check uses: the invariants' names, the violation and not-applicable
exceptions, and the probes (random ordinary tokens, tolerances relative to the largest output,
the first position beyond it)."""

from __future__ import annotations

import numpy as np

from .adapters import TokenModel
from .invariants import InvariantViolation

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
    "attention_implementations": "eager and SDPA attention give the same outputs",
    "eos": "generation stops each row at the eos token and pads it after",
    "label_shift": "the loss from labels is the paper's loss computed from the logits",
    "bfloat16": "in bfloat16, cached decoding stays within a stated drift of the full forward",
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


def violation(invariant, message, position=None, size=None):
    raise ConformanceViolation(invariant, message, position=position, size=size)


# ------------------------------------------------------------------- what every check uses


def seeded_rng(seed):
    return np.random.default_rng(seed)


def random_tokens(model: TokenModel, rng, shape) -> np.ndarray:
    """Ordinary token ids (no pad, bos, eos, …) of ``shape``; the first 1,000 ids are plenty."""
    allowed = np.setdiff1d(np.arange(min(model.vocab_size, 1000)), model.special_ids)
    allowed = allowed[allowed != model.pad_token_id]
    return rng.choice(allowed, size=shape)


def other_token(model, rng, token):
    """A token id that is not ``token`` (nor special)."""
    while True:
        t = int(random_tokens(model, rng, ()))
        if t != token:
            return t


def probe_length(model, want, reserve=0):
    if model.max_length is None:
        return want
    return max(2, min(want, model.max_length - reserve))


def tolerance_of(reference, atol):
    """``atol`` relative to the largest finite |output| (at least 1e-3)."""
    finite = np.abs(np.asarray(reference))[np.isfinite(reference)]
    return atol * max(1e-3, float(finite.max()) if finite.size else 1.0)


def column_diff(got, expected):
    """Max |Δ| per column of two ``(N_V, ℓ)`` arrays (NaN where either is not finite → inf)."""
    d = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    d[~np.isfinite(d)] = np.inf
    return d.max(axis=0)


def first_bad(diffs, tol):
    bad = np.flatnonzero(diffs > tol)
    return (int(bad[0]), float(diffs.max())) if bad.size else (None, float(diffs.max(initial=0)))


def fmt_size(size):
    return "inf (not finite)" if not np.isfinite(size) else f"{size:.3g}"


def random_context(model, rng, batch, length):
    if model.kind != "seq2seq":
        return None
    return random_tokens(model, rng, (batch, length))


def left_position_ids(mask):
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def gradient_threshold(model, influence):
    if model.gradient == "finite differences":
        return 1e-7 * float(influence.max(initial=0.0))
    return 0.0


def padded(x, pads, side):
    n, ell = pads.shape[1], x.shape[1]
    if side == "left":
        ids = np.concatenate([pads, x], axis=1)
        mask = np.concatenate([np.zeros((1, n), int), np.ones((1, ell), int)], axis=1)
        return ids, mask, np.arange(n, n + ell)
    ids = np.concatenate([x, pads], axis=1)
    mask = np.concatenate([np.ones((1, ell), int), np.zeros((1, n), int)], axis=1)
    return ids, mask, np.arange(ell)


def check_same_forward(invariant, first, second) -> None:
    """Two forward passes on one input (two examples each) agree exactly."""
    diffs = np.maximum(column_diff(first[0], second[0]), column_diff(first[1], second[1]))
    p, size = first_bad(diffs, 0.0)
    if p is not None:
        violation(
            invariant,
            f"two forward passes on the same input differ at position {p} by {fmt_size(size)}: is "
            "dropout on (model.eval() not called) or an unseeded random source used?",
            p,
            size,
        )
