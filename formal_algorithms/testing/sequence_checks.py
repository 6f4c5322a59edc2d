"""The conformance checks of one forward pass over sequences: causality (eq. 3), padding on
either side (Algorithm 4's Mask), batch independence, permutation (§5) and an encoder's
bidirectionality. Each returns what it verified or raises :class:`.probing.ConformanceViolation`
or :class:`.probing.NotApplicable`; :mod:`.conformance` runs them."""

from __future__ import annotations

import numpy as np

from ..paper.checks import check_count, fail
from . import probing as P
from .adapters import NotSupported, TokenModel
from .arguments import checked


@checked
def check_causality(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """No output at position t depends on a token after t (the decoder of an encoder-decoder,
    with the context fixed): by perturbing each token alone, and by the gradient of every output
    w.r.t. every token embedding when the model has gradients (:meth:`TokenModel.influence`)."""
    if model.kind == "masked":
        raise P.NotApplicable(
            "a bidirectional encoder: that every position sees every token is tested by the "
            "bidirectionality check"
        )
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x, z = P.random_tokens(model, rng, (1, ell)), P.random_context(model, rng, 1, ell)
    base = model.logits(x, z=z)[0]
    tol = P.tolerance_of(base, atol)
    for s in range(1, ell):
        x2 = x.copy()
        x2[0, s] = P.other_token(model, rng, x[0, s])
        p, size = P.first_bad(P.column_diff(model.logits(x2, z=z)[0][:, :s], base[:, :s]), tol)
        if p is not None:
            P.violation(
                "causality",
                f"the output at position {p} changed by {P.fmt_size(size)} when only the token at "
                f"later position {s} changed: a later token leaks backwards (is the causal mask "
                "triangle the right way round and aligned?)",
                p,
                size,
            )
    done = f"{ell} positions, each token perturbed alone"
    try:
        influence = model.influence(x, z=z)[0]
    except NotSupported:
        return done + " (no gradients)"
    threshold = P.gradient_threshold(model, influence)
    for t in range(ell):
        later = np.flatnonzero(influence[t, t + 1 :] > threshold)
        if later.size:
            s = t + 1 + int(later[0])
            P.violation(
                "causality",
                f"the output at position {t} has gradient {influence[t, s]:.3g} with respect to "
                f"the embedding of the later token at position {s} ({model.gradient})",
                t,
                influence[t, s],
            )
        if influence[t, t] <= threshold:
            P.violation(
                "causality",
                f"the output at position {t} does not depend on its own token (gradient 0, "
                f"{model.gradient}): is the causal mask a strict triangle?",
                t,
                0.0,
            )
    return done + f", and every ∂ output[t] / ∂ e_s for s > t exactly 0 ({model.gradient})"


@checked
def check_padding(
    model: TokenModel,
    side: str = "right",
    *,
    seed: int = 0,
    length: int = 8,
    atol: float = 1e-4,
    amounts=(1, 3),
):
    """Outputs at real tokens are unchanged by padding on ``side`` (``"left"``/``"right"``) with
    an attention mask, for every amount in ``amounts`` and two contents (the pad id, random ids).
    Left padding passes ``position_ids = cumsum(mask) − 1`` when the model takes position ids.
    An encoder-decoder has its context z padded; its decoder outputs must not change."""
    invariant = f"padding_{side}"
    if side not in ("left", "right"):
        fail("check_padding", "side", f"must be 'left' or 'right', got {side!r}")
    amounts = _amounts(amounts)
    if not model.accepts_attention_mask:
        raise P.NotApplicable("the model takes no attention_mask (it cannot be padded)")
    if (
        side == "left"
        and model.kind != "causal"
        and not model.accepts_position_ids
        and model.positions is not False
    ):
        raise P.NotApplicable("left padding shifts positions and the model takes no position_ids")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length, reserve=max(amounts))
    x = P.random_tokens(model, rng, (1, ell))
    x_dec, ref = _unpadded_reference(model, x, side, rng)
    tol = P.tolerance_of(ref, atol)
    checked, gradients = 0, False
    for n in amounts:
        for content in ("pad-id", "random"):
            pads = np.full((1, n), model.pad_token_id)
            pads = pads if content == "pad-id" else P.random_tokens(model, rng, (1, n))
            ids, mask, real = P.padded(x, pads, side)
            pos = (
                P.left_position_ids(mask) if side == "left" and model.accepts_position_ids else None
            )
            out, where = _padded_output(model, x_dec, ids, mask, pos, real)
            p, size = P.first_bad(P.column_diff(out, ref), tol)
            if p is not None:
                hint = _padding_hint(model, side)
                P.violation(
                    invariant,
                    f"with {n} {content} padding token(s) on the {side}, the {where} {p} "
                    f"changed by {P.fmt_size(size)}: {hint}",
                    p,
                    size,
                )
            if model.kind != "seq2seq":
                gradients = _padding_gradient(model, invariant, ids, mask, pos, real)
            checked += 1
    done = f"{checked} paddings ({', '.join(map(str, amounts))} tokens; pad id and random ids)"
    if model.kind == "seq2seq":
        return done
    if not gradients:
        return done + " (no gradients)"
    return done + f"; on each, gradients w.r.t. padding exactly 0 ({model.gradient})"


def _amounts(amounts) -> tuple[int, ...]:
    """``check_padding``'s ``amounts``: a non-empty list of padding lengths, each ≥ 1."""
    if isinstance(amounts, (str, bytes)) or not hasattr(amounts, "__iter__"):
        fail("check_padding", "amounts", f"must be a list of counts, got {amounts!r}", TypeError)
    amounts = tuple(amounts)
    if not amounts:
        fail("check_padding", "amounts", "is empty; give at least one amount of padding (≥ 1)")
    return tuple(check_count("check_padding", "amounts", n, 1) for n in amounts)


def _unpadded_reference(model, x, side, rng):
    """The decoder input (seq2seq: a random one; else ``None``) and the unpadded outputs. With
    left padding, explicit 0-based positions on both sides: a model whose default positions start
    elsewhere (RoBERTa: after the padding index) is compared with itself."""
    if model.kind == "seq2seq":
        x_dec = P.random_tokens(model, rng, x.shape)
        return x_dec, model.logits(x_dec, z=x)[0]
    if side == "left" and model.accepts_position_ids:
        return None, model.logits(x, position_ids=np.arange(x.shape[1])[None])[0]
    return None, model.logits(x)[0]


def _padded_output(model, x_dec, ids, mask, pos, real):
    """The outputs compared with the reference, and what they are called in a violation."""
    if model.kind == "seq2seq":
        return model.logits(x_dec, z=ids, z_mask=mask)[0], "decoder output"
    out = model.logits(ids, attention_mask=mask, position_ids=pos)[0][:, real]
    return out, "output at real position"


def _padding_hint(model, side) -> str:
    if side != "left" or model.kind == "seq2seq":
        return "is the padding mask applied to the keys (the context axis)?"
    hint = "are positions counted from the first real token, and padded keys masked?"
    return hint + ("" if model.accepts_position_ids else " (the model takes no position_ids)")


def _padding_gradient(model, invariant, ids, mask, pos, real) -> bool:
    """Real outputs have exactly zero gradient w.r.t. the padding embeddings; False when the model
    has no gradients."""
    try:
        influence = model.influence(ids, attention_mask=mask, position_ids=pos)[0]
    except NotSupported:
        return False
    threshold = P.gradient_threshold(model, influence)
    pad_positions = np.flatnonzero(mask[0] == 0)
    for q, t in enumerate(real):
        leak = np.flatnonzero(influence[t, pad_positions] > threshold)
        if leak.size:
            s = int(pad_positions[leak[0]])
            P.violation(
                invariant,
                f"the output at real position {q} has gradient {influence[t, s]:.3g} with "
                f"respect to the padding token at input position {s} ({model.gradient}): is the "
                "padding mask applied to the keys?",
                q,
                influence[t, s],
            )
    return True


@checked
def check_batch(
    model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4, batch: int = 3
):
    """A batch of ``batch`` different sequences gives each example what it gives alone: catches
    statistics (normalisation, dropout masks, …) computed over the batch axis."""
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x, z = P.random_tokens(model, rng, (batch, ell)), P.random_context(model, rng, batch, ell)
    together = model.logits(x, z=z)
    for b in range(batch):
        alone = model.logits(x[b : b + 1], z=None if z is None else z[b : b + 1])[0]
        p, size = P.first_bad(P.column_diff(together[b], alone), P.tolerance_of(alone, atol))
        if p is not None:
            P.violation(
                "batch",
                f"example {b} of a batch of {batch} differs from the same example alone at "
                f"position {p} by {P.fmt_size(size)}: is something computed over the batch axis?",
                p,
                size,
            )
    return f"{batch} examples of {ell} tokens, batched and alone"


@checked
def check_permutation(model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4):
    """For a model without positions (``positions=False``): an encoder's outputs are permuted
    with its tokens, ``f(x[π])[:, t] = f(x)[:, π(t)]``; an encoder-decoder's decoder outputs do
    not change when the context is reordered (cross-attention reads a set)."""
    if model.positions is not False:
        raise P.NotApplicable("the model uses token positions (declare positions=False if not)")
    if model.kind == "causal":
        raise P.NotApplicable("a causal decoder is not permutation-equivariant")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x = P.random_tokens(model, rng, (1, ell))
    perm = rng.permutation(ell)
    if model.kind == "masked":
        base = model.logits(x)[0]
        p, size = P.first_bad(
            P.column_diff(model.logits(x[:, perm])[0], base[:, perm]), P.tolerance_of(base, atol)
        )
        if p is not None:
            P.violation(
                "permutation",
                f"permuting the tokens by {perm.tolist()} did not permute the outputs: position "
                f"{p} differs by {P.fmt_size(size)} (a mask or a position that the model should not "
                "have?)",
                p,
                size,
            )
        return f"{ell} tokens permuted by {perm.tolist()}"
    x_dec = P.random_tokens(model, rng, (1, ell))
    base = model.logits(x_dec, z=x)[0]
    p, size = P.first_bad(
        P.column_diff(model.logits(x_dec, z=x[:, perm])[0], base), P.tolerance_of(base, atol)
    )
    if p is not None:
        P.violation(
            "permutation",
            f"reordering the context by {perm.tolist()} changed the decoder output at position "
            f"{p} by {P.fmt_size(size)}",
            p,
            size,
        )
    return f"a context of {ell} tokens reordered by {perm.tolist()}"


@checked
def check_bidirectionality(
    model: TokenModel, *, seed: int = 0, length: int = 8, atol: float = 1e-4
):
    """An encoder (``kind="masked"``) sees every token: changing the token at any position s moves
    every output (exactly 0 change means position t does not read s); an encoder-decoder's
    decoder outputs each move when any context token changes. ``atol`` is unused: any change
    counts (a strictly causal model moves earlier outputs by exactly 0)."""
    del atol
    if model.kind == "causal":
        raise P.NotApplicable("a causal decoder must not see later tokens (the causality check)")
    rng = P.seeded_rng(seed)
    ell = P.probe_length(model, length)
    x = P.random_tokens(model, rng, (1, ell))
    x_dec = P.random_tokens(model, rng, (1, ell)) if model.kind == "seq2seq" else None

    def run(ids):
        return model.logits(ids)[0] if x_dec is None else model.logits(x_dec, z=ids)[0]

    base = run(x)
    for s in range(ell):
        x2 = x.copy()
        x2[0, s] = P.other_token(model, rng, x[0, s])
        still = np.flatnonzero(P.column_diff(run(x2), base) == 0)
        if still.size:
            t = int(still[0])
            what = "the decoder output" if x_dec is not None else "the output"
            P.violation(
                "bidirectionality",
                f"{what} at position {t} did not move at all when the token at position {s} "
                "changed: it does not see that token (a causal mask, or is_decoder=True, in an "
                "encoder?)",
                t,
                0.0,
            )
    return f"{ell} tokens each perturbed alone moved all {ell} outputs"
