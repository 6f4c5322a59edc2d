"""The invariants people rely on that Hugging Face's own model tests check, asked of any model
whose adapter offers the hook (:func:`~.torch_adapters.from_hf` offers all four; a torch module
offers the bfloat16 copy). A model without the hook is skipped, with the reason.

- ``attention_implementations``: the eager and the SDPA attention give the same outputs on a
  left-padded batch (the masks of the two code paths are built apart, and drift apart).
- ``eos``: generation stops a row at the end-of-sequence token and fills the finished row with
  padding, the other rows going on as before.
- ``label_shift``: the model's loss from ``labels`` is the paper's loss (Algorithms 11-13) computed
  by hand from its logits in float64: the mean of ``−log P[x[t+1], t]`` for a decoder (the
  labels shifted left), of ``−log P[x[t], t]`` for a masked model (no shift), and of
  ``−log P[y[t], t]`` with the decoder reading ``[start, y[:-1]]`` for an encoder-decoder;
  labels of −100 are ignored.
- ``bfloat16``: in bfloat16, cached decoding stays within :data:`BFLOAT16_DRIFT` of the full
  forward (relative to the largest output); in float32 the ``cache`` check asks for ``atol``.
"""

from __future__ import annotations

import numpy as np

from . import probing as P
from .arguments import checked
from .token_model import TokenModel

IGNORED = -100  # Hugging Face's label for "no loss here"
#: bfloat16 keeps 8 significant bits (a relative step of 2⁻⁸ ≈ 0.4 %); cached and full decoding
#: round differently, so they may differ by a few steps of the largest output. Measured on tiny
#: random GPT-2, Llama, GPT-NeoX, Qwen2, Mistral and OPT: at most 0.4 %.
BFLOAT16_DRIFT = 0.03


@checked
def check_attention_implementations(
    model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4
):
    """Every attention implementation gives the reference's (the first's) outputs at the real
    positions of a batch whose second row is left padded by 2 (bug class: a mask built twice)."""
    implementations = model.attention_implementations()
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x, z = P.random_tokens(model, rng, (2, ell)), P.random_context(model, rng, 2, ell)
    mask, kw = np.ones((2, ell), int), {}
    padding = np.ones((2, ell), int)
    padding[1, :2] = 0
    if model.kind == "seq2seq":  # the context is padded; every decoder position is real
        kw["z_mask"] = padding
    elif model.accepts_attention_mask:
        mask, kw["attention_mask"] = padding, padding
        if model.accepts_position_ids:
            kw["position_ids"] = P.left_position_ids(mask)
    outputs = [model.logits_with_attention(i, x, z=z, **kw) for i in implementations]
    reference = outputs[0]
    tol = P.tolerance_of(np.transpose(reference, (0, 2, 1))[mask.astype(bool)], atol)
    for name, out in zip(implementations[1:], outputs[1:], strict=True):
        for b in range(2):
            real = mask[b].astype(bool)
            p, size = P.first_bad(P.column_diff(out[b][:, real], reference[b][:, real]), tol)
            if p is not None:
                p += int((~real).sum())
                P.violation(
                    "attention_implementations",
                    f"with {name!r} attention the output at position {p} of row {b} differs from "
                    f"{implementations[0]!r}'s by {P.fmt_size(size)}: is one path's mask (causal, "
                    "padding) or scaling built differently?",
                    p,
                    size,
                )
    shown = " and ".join(repr(i) for i in implementations)
    padded = "context " if "z_mask" in kw else ""
    n = 0 if not kw else 2
    return f"{shown} attention equal on a batch with {n} left-padded {padded}tokens"


@checked
def check_eos(model: TokenModel, *, seed: int = 0, length: int = 8, new_tokens: int = 6):
    """Greedy generation with an end-of-sequence token stops each row at it (inclusive) and pads
    the rest, the tokens before it unchanged. The token is the first row's first (after step 0)
    that repeats no earlier one, or its first, so that the stop falls before the last step."""
    if model.kind == "masked":
        raise P.NotApplicable("a masked language model does not generate")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length, reserve=new_tokens)
    x, z = P.random_tokens(model, rng, (2, ell)), P.random_context(model, rng, 2, ell)
    start = getattr(model, "decoder_start_token_id", None)
    if model.kind == "seq2seq" and start is not None:
        x[:, 0] = start  # else Hugging Face's generate puts it before the prompt
    free = model.generate_until(x, new_tokens, eos=None, z=z)[:, ell:]
    row = list(free[0])
    step = next((k for k in range(1, len(row) - 1) if row[k] not in row[:k]), 0)
    eos = int(row[step])
    stops = [next((k for k, t in enumerate(r) if t == eos), None) for r in free]
    width = new_tokens if None in stops else max(stops) + 1
    expected = np.full((2, width), model.pad_token_id)
    for b, k in enumerate(stops):
        n = width if k is None else k + 1
        expected[b, :n] = free[b, :n]
    got = model.generate_until(x, new_tokens, eos=eos, z=z)[:, ell:]
    if got.shape != expected.shape:
        P.violation(
            "eos",
            f"with eos = {eos} (generated at step {step}) the rows stop after {got.shape[1]} tokens, "
            f"expected {width}: is the stop checked after each token?",
            ell + min(got.shape[1], width) - 1,
        )
    for b in range(2):
        bad = np.flatnonzero(got[b] != expected[b])
        if bad.size:
            i = int(bad[0])
            if stops[b] is not None and i > stops[b]:
                why = (
                    f"row {b} went on after eos = {eos} at step {stops[b]}: token {got[b, i]} at "
                    f"step {i} where padding ({expected[b, i]}) belongs"
                )
            else:
                why = f"row {b} has token {got[b, i]} at step {i} before eos = {eos}, not {expected[b, i]}"
            P.violation("eos", why, ell + i)
    return f"eos = {eos}: row 0 stopped at step {step}, {width} steps in all, finished rows padded"


@checked
def check_label_shift(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """The model's loss from labels equals the loss computed by hand from its logits (module
    docstring), with one label ignored."""
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x, z = P.random_tokens(model, rng, (2, ell)), P.random_context(model, rng, 2, ell)
    labels = x.copy()
    labels[1, ell // 2] = IGNORED
    got = model.loss_from_labels(x, labels, z=z)
    if model.kind == "seq2seq":
        start = getattr(model, "decoder_start_token_id", None)
        if start is None:
            raise P.NotApplicable(f"{model.name} declares no decoder start token")
        reads = np.concatenate([np.full((2, 1), start), labels[:, :-1]], axis=1)
        reads[reads == IGNORED] = model.pad_token_id
        expected = _mean_nll(model.logits(reads, z=z), labels)
        rule = "the decoder reading [start, y[:-1]] predicts y[t]"
    else:
        logits = model.logits(x)
        shifted = model.kind == "causal"
        expected = _mean_nll(logits[:, :, :-1], labels[:, 1:]) if shifted else None
        unshifted = _mean_nll(logits, labels)
        expected = unshifted if expected is None else expected
        rule = "P[:, t] predicts x[t+1]" if shifted else "P[:, t] predicts x[t] (no shift)"
    size = abs(got - expected)
    if size > atol * max(1.0, abs(expected)):
        hint = ""
        if model.kind == "causal" and abs(got - unshifted) <= atol * max(1.0, abs(unshifted)):
            hint = ": the labels are not shifted (each position scored on its own token)"
        P.violation(
            "label_shift",
            f"the model's loss from labels is {got:.6g}, the loss by hand ({rule}) "
            f"{expected:.6g}{hint}",
            None,
            size,
        )
    return f"loss from labels {got:.6g} = by hand {expected:.6g} ({rule}; −100 ignored)"


def _mean_nll(outputs, targets) -> float:
    """Mean over the targets that are not ignored of ``−log softmax(outputs[b, :, t])[target]``,
    in float64; ``outputs`` is ``(B, N_V, ℓ)``."""
    o = np.asarray(outputs, np.float64)
    shift = o.max(axis=1, keepdims=True)
    log_p = o - shift - np.log(np.exp(o - shift).sum(axis=1, keepdims=True))
    b, t = np.nonzero(targets != IGNORED)
    return float(-log_p[b, targets[b, t], t].mean())


@checked
def check_bfloat16(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """In bfloat16, outputs decoded through the cache (a prefill of half, then one token at a
    time) stay within :data:`BFLOAT16_DRIFT` · max |output| of the full forward's."""
    if model.kind == "masked":
        raise P.NotApplicable("an encoder does not decode")
    if not model.has_cache:
        raise P.NotApplicable("the model has no key-value cache")
    low = model.in_dtype("bfloat16")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x, z = P.random_tokens(model, rng, (1, ell)), P.random_context(model, rng, 1, ell)
    full = low.logits(x, z=z)[0]
    cached = low.cached_logits(x, (max(1, ell // 2),), z=z)[0]
    p, size = P.first_bad(P.column_diff(cached, full), P.tolerance_of(full, BFLOAT16_DRIFT))
    largest = float(np.abs(full).max())
    if p is not None:
        P.violation(
            "bfloat16",
            f"in bfloat16 the cached output at position {p} differs from the full forward's by "
            f"{P.fmt_size(size)}, beyond {BFLOAT16_DRIFT} · max |output| = "
            f"{BFLOAT16_DRIFT * largest:.3g}: is the cache stored or combined at lower precision?",
            p,
            size,
        )
    return (
        f"bfloat16 cached and full outputs within {size / max(largest, 1e-300):.2g} · max |output| "
        f"(bound {BFLOAT16_DRIFT})"
    )
