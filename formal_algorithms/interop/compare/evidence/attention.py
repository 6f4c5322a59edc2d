"""Evidence for Algorithm 4's weights (and the lines after them): each head's weights A, as the
model returns them, against softmax(S / √d_attn) rebuilt in float64 numpy from the Q and K the
model exposes, and against each candidate departure rebuilt the same way."""

from __future__ import annotations

import math

import numpy as np

from ..alignment import key
from .base import close

__all__ = ["attention_evidence"]

ROPE_BASES = (1e4, 1e5, 5e5, 1e6, 1e7)
ROPE_SCALINGS = (2.0, 4.0, 8.0)
ROPE_OFFSETS = (1, -1, 2)


def softmax_masked(S, mask, axis=0):
    """Softmax of S over ``axis`` (0: the paper's, over t_z), −∞ where the mask is 0."""
    S = np.where(mask, S, -np.inf) if mask is not None else S
    E = np.exp(S - S.max(axis=axis, keepdims=True))
    return E / E.sum(axis=axis, keepdims=True)


def rope_np(X, positions, base):
    """RoPE in float64 numpy, half-split pairs (row i with row i + d/2), as Hugging Face's Llama
    and the library's families.llama: column t rotated by the angles positions[t] · base^(−2i/d)."""
    d = X.shape[0]
    freq = base ** (-np.arange(0, d, 2) / d)
    angle = np.outer(freq, positions)
    cos, sin = np.cos(angle), np.sin(angle)
    x1, x2 = X[: d // 2], X[d // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin])


class _Heads:
    """Q and K of every head of one attention (the model's where exposed, else the paper's),
    before RoPE for a RoPE family, and the family's rotation."""

    def __init__(self, ctx):
        k, f = ctx.key, ctx.family
        self.ctx, self.H = ctx, f.H
        self.Q = self._per_head(1)
        self.K = self._per_head(2)
        self.rope = getattr(f, "rope", False)
        self.base = f.kwargs.get("rope_base") if self.rope else None
        self.site, self.l = k.site, k.l

    def _per_head(self, line):
        ctx, out = self.ctx, []
        k = ctx.key
        full = getattr(ctx.family, "full_paper", {})  # a cached step: every key the step reads
        for h in range(1, self.H + 1):
            at = key(k.top, k.site, 4, line, **_l(k), h=h)
            value = ctx.model(at)
            if line == 2 and at in full and (value is None or value.shape != full[at].shape):
                value = full[at]  # the model exposes only the step's new key: the paper's others
            out.append(value if value is not None else ctx.paper.get(at))
        return None if any(a is None for a in out) else out

    def scores(self, q, k, *, base=None, q_shift=0, scale=1.0, keys_at_step=False):
        """Kᵀ Q, rotated for a RoPE family: the queries are the last columns of the keys'
        positions 0 … n_k − 1 (all of them, or a cached step's one)."""
        if self.rope:
            base = self.base if base is None else base
            n_q, n_k = q.shape[1], k.shape[1]
            q_at = np.arange(n_k - n_q, n_k) + q_shift
            k_at = np.full(n_k, n_k - 1) if keys_at_step else np.arange(n_k)
            q = rope_np(q, q_at / scale, base)
            k = rope_np(k, k_at / scale, base)
        return k.T @ q


def attention_evidence(ctx):
    if ctx.key.l is None and ctx.family.algorithm != 8:
        return []
    heads = _Heads(ctx)
    found, paper_heads, gaps, n = [], 0, [], 0
    for h in range(1, heads.H + 1):
        at = key(ctx.key.top, ctx.key.site, 4, 6, "A", **_l(ctx.key), h=h)
        A = ctx.model(at)
        if A is None:
            continue
        n += 1
        sentence, gap = _one_head(ctx, heads, h, A)
        if sentence:
            found.append(sentence)
        elif gap is not None:
            paper_heads += 1
            gaps.append(gap)
    ctx.ran.add("weights")
    if n and paper_heads == heads.H and not found:
        ctx.hit.add("weights")
        found.append(
            f"the attention weights of layer {ctx.key.l} equal softmax(S / √d_attn) of "
            f"the Q and K above for every head (max abs difference {max(gaps):.2g}): "
            "look at the values, the head concatenation and W_o"
        )
    return found


def _l(k):
    return {} if k.l is None else {"l": k.l}


def _one_head(ctx, heads, h, A):
    """(a sentence naming what this head's weights are, None) or (None, the gap to the paper's
    softmax(S / √d_attn) when they are the paper's) or (None, None)."""
    mask = ctx.family.mask(ctx.key, A.shape)
    sentence = _mask_evidence(ctx, h, A, mask)
    if sentence or heads.Q is None or heads.K is None:
        return sentence, None
    q, k = heads.Q[h - 1], heads.K[h - 1]
    d = q.shape[0]
    own = softmax_masked(heads.scores(q, k) / math.sqrt(d), mask)
    if close(A, own, ctx.tol):
        return None, float(np.abs(A - own).max())
    for check in (_scale, _strided, _swapped, _query_axis, _rope, _kv_order):
        sentence = check(ctx, heads, h, A, mask, q, k)
        if sentence:
            return sentence, None
    return None, None


def _mask_evidence(ctx, h, A, mask):
    ctx.ran.add("mask")
    total = A.sum(axis=0)  # over the keys the sequence has (a padded run: its real tokens)
    if getattr(ctx.family, "padded", False):
        ctx.ran.add("padding")
    if getattr(ctx.family, "padded", False) and float(total.min()) < 1 - 1e-3:
        ctx.hit.add("padding")
        t = int(np.argmin(total)) + 1
        return (
            f"head {h}: the model's weights over the sequence's own tokens sum to "
            f"{float(total.min()):.3g} at t_x = {t}, not 1: weight goes to positions outside "
            "the sequence (padding not masked over the keys t_z)"
        )
    if mask is None:
        zero = A <= 1e-30
        if not zero.any():
            return None
        ctx.hit.add("mask")
        causal = np.array_equal(zero, ~np.triu(np.ones(A.shape, bool)))
        return f"head {h}: the model gives weight 0 " + (
            "exactly where t_z > t_x: a causal "
            "mask where the paper's attention here has none (Mask ≡ 1)"
            if causal
            else f"at {int(zero.sum())} entr{'y' if zero.sum() == 1 else 'ies'} where the paper's "
            "attention has no mask"
        )
    leak = (A > 1e-12) & ~mask
    if leak.any():
        ctx.hit.add("mask")
        if np.array_equal(A > 1e-12, mask.T):
            return (
                f"head {h}: the model puts weight where Mask[t_z, t_x] = 0: its mask is the "
                "transpose of the paper's (it attends to t_z ≥ t_x)"
            )
        t_z, t_x = np.nonzero(leak)
        ahead = sorted({int(a) for a in t_z - t_x})
        return (
            f"head {h}: the model puts weight where Mask[t_z, t_x] = 0, at t_z − t_x ∈ "
            f"{{{', '.join(map(str, ahead))}}}: it sees {max(ahead)} future token"
            + ("s" if max(ahead) > 1 else "")
        )
    if ((A <= 1e-30) & mask).any():
        ctx.hit.add("mask")
        return f"head {h}: the model gives weight 0 where Mask[t_z, t_x] = 1"
    return None


def _scale(ctx, heads, h, A, mask, q, k):
    ctx.ran.add("scale")
    S = heads.scores(q, k)
    allowed = A > 1e-30 if mask is None else mask & (A > 1e-30)
    S_c = np.where(allowed, S - _column_mean(S, allowed), 0)
    logA = np.log(np.where(allowed, A, 1.0))
    L_c = np.where(allowed, logA - _column_mean(logA, allowed), 0)
    if float((S_c * S_c).sum()) == 0:
        return None
    c = float((S_c * L_c).sum() / (S_c * S_c).sum())  # log A = c·S + const per column
    d = q.shape[0]
    if c <= 0 or not close(A, softmax_masked(S * c, mask), ctx.tol):
        return None
    ctx.hit.add("scale")
    by_d = math.isclose(1 / c, d, rel_tol=1e-3)
    return (
        f"head {h}: the model's weights are softmax(S / {1 / c:.4g}); the paper divides by "
        f"√d_attn = {math.sqrt(d):.4g}" + (f": the model divides by d_attn = {d}" if by_d else "")
    )


def _column_mean(M, allowed):
    n = np.maximum(allowed.sum(axis=0, keepdims=True), 1)
    return np.where(allowed, M, 0).sum(axis=0, keepdims=True) / n


def _explains(ctx, check, A, weights, text):
    """``text`` when the model's weights ``A`` are ``weights`` (within the tolerance), else None;
    the check is counted as run, and as hit when it explains A."""
    ctx.ran.add(check)
    if not close(A, weights, ctx.tol):
        return None
    ctx.hit.add(check)
    return text


def _strided(ctx, heads, h, A, mask, q, k):
    if heads.rope or getattr(ctx.family, "G", None):
        return None
    H, d = heads.H, q.shape[0]
    q2, k2 = np.concatenate(heads.Q)[h - 1 :: H], np.concatenate(heads.K)[h - 1 :: H]
    text = (
        f"head {h}: the model's weights are those of a head made of every H-th row of Q and "
        f"K (rows {h - 1}, {h - 1 + H}, … counted from 0): the heads are split strided "
        "(view(…, d_attn, H)) instead of in contiguous blocks of d_attn rows"
    )
    return _explains(ctx, "strided", A, softmax_masked(k2.T @ q2 / math.sqrt(d), mask), text)


def _swapped(ctx, heads, h, A, mask, q, k):
    ctx.ran.add("swapped")
    S = heads.scores(q, k)
    if S.shape[0] != S.shape[1]:
        return None
    text = (
        f"head {h}: the model's weights are softmax(Sᵀ / √d_attn) over t_z: its scores are "
        "Qᵀ K instead of Kᵀ Q (queries and keys swapped)"
    )
    return _explains(ctx, "swapped", A, softmax_masked(S.T / math.sqrt(q.shape[0]), mask), text)


def _query_axis(ctx, heads, h, A, mask, q, k):
    S = heads.scores(q, k) / math.sqrt(q.shape[0])
    text = (
        f"head {h}: the model's weights are softmax(S / √d_attn) normalised over the queries "
        "t_x (each row of A[t_z, t_x] sums to 1) instead of over the keys t_z (columns)"
    )
    return _explains(ctx, "softmax-axis", A, softmax_masked(S, mask, axis=1), text)


def _rope(ctx, heads, h, A, mask, q, k):
    if not heads.rope:
        return None
    d = q.shape[0]
    tries = [
        ("rope-base", dict(base=b), f"RoPE with base {b:g} (the configuration says {heads.base:g})")
        for b in ROPE_BASES
        if not math.isclose(b, heads.base)
    ]
    tries += [
        (
            "rope-scaling",
            dict(scale=s),
            f"RoPE with positions divided by {s:g} (linear "
            "scaling, where the configuration has none)",
        )
        for s in ROPE_SCALINGS
    ]
    tries += [
        (
            "rope-offset",
            dict(q_shift=o),
            f"RoPE with the queries' positions {o:+d} "
            "relative to the keys' (an offset, e.g. a cache position off by one)",
        )
        for o in ROPE_OFFSETS
    ]
    if q.shape[1] < k.shape[1]:  # a cached step
        tries.append(
            (
                "rope-cache",
                dict(keys_at_step=True),
                "RoPE with every cached key rotated "
                "by the step's position (keys cached before RoPE, rotated when read)",
            )
        )
    for check, options, text in tries:
        weights = softmax_masked(heads.scores(q, k, **options) / math.sqrt(d), mask)
        found = _explains(
            ctx, check, A, weights, f"head {h}: the model's weights are those of {text}"
        )
        if found:
            return found
    return None


def _kv_order(ctx, heads, h, A, mask, q, k):
    family = ctx.family
    G = getattr(family, "G", None)
    if not G or G == heads.H:
        return None
    ctx.ran.add("kv-order")
    tiled = (h - 1) % G  # torch's repeat / tile order instead of repeat_interleave
    if tiled == family.group(h):
        return None
    other = next(i for i in range(1, heads.H + 1) if family.group(i) == tiled)
    S = heads.scores(q, heads.K[other - 1])
    text = (
        f"head {h}: the model's weights are those of query head {h} with key set "
        f"{tiled + 1} ((h − 1) mod G + 1), where the paper's grouping gives set {family.group(h) + 1} "
        "(⌊(h − 1)·G/H⌋): the key/value sets are tiled instead of repeated per group"
    )
    return _explains(ctx, "kv-order", A, softmax_masked(S / math.sqrt(q.shape[0]), mask), text)
