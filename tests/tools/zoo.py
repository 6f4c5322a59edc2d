"""A zoo of small PyTorch transformers: one healthy decoder (learned, rotary or ALiBi positions),
encoder and encoder-decoder, and one deliberately broken model per bug class that public
transformer code keeps shipping (../shared/notes/bug-classes.md; TransformerLens #776 and #1005,
nanoGPT #331, x-transformers #322, torchtune #959). Each broken model changes one method of the
healthy one, so that exactly one thing is wrong.

The decoder follows Hugging Face's calling convention (``input_ids``, ``attention_mask`` over the
cached and the new tokens, ``position_ids``, ``past_key_values``, ``use_cache``), so that
:func:`formal_algorithms.testing.adapters.from_torch` drives it like any HF model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VOCAB, D, HEADS, LAYERS, MAX_LEN = 24, 16, 2, 2, 32


class Output(NamedTuple):
    logits: torch.Tensor
    past_key_values: dict | None = None


def _rotate(x, pos):
    """Rotary position embedding of ``x`` ``(B, H, ℓ, d_h)`` at positions ``pos`` ``(B, ℓ)``."""
    half = x.shape[-1] // 2
    freq = 10000.0 ** (-torch.arange(half, dtype=x.dtype) / half)
    angle = pos[:, None, :, None].to(x.dtype) * freq  # (B, 1, ℓ, half)
    cos, sin = angle.cos(), angle.sin()
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))


class TinyLM(nn.Module):
    """A Pre-LN decoder (Algorithm 10) with a key-value cache; ``pos`` is ``"learned"``,
    ``"rotary"``, ``"alibi"`` or ``"none"``; ``causal=False`` makes it a bidirectional encoder
    (Algorithm 9's attention) for the masked-LM checks. Healthy: every check passes."""

    def __init__(self, pos="learned", causal=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.pos_kind, self.causal = pos, causal
        self.tok = nn.Embedding(VOCAB, D)
        self.wpe = nn.Embedding(MAX_LEN, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f, self.head = nn.LayerNorm(D), nn.Linear(D, VOCAB)
        slopes = torch.tensor([2.0 ** (-8 * (h + 1) / HEADS) for h in range(HEADS)])
        self.register_buffer("slopes", slopes, persistent=False)  # cast with the model
        with torch.no_grad():  # biases and γ, β away from 0 and 1: nothing hides
            for name, p in self.named_parameters():
                if p.ndim == 1:
                    p.copy_(0.3 * torch.randn(p.shape) + (1.0 if "ln" in name and name.endswith("weight") else 0.0))  # fmt: skip
        self.eval()

    # ---- the pieces the broken models override --------------------------------------------------

    def positions(self, B, ell, past_len, position_ids):
        """Positions of the new tokens ``(B, ℓ)``: the given ids, else after the cached ones."""
        if position_ids is not None:
            return position_ids
        return (past_len + torch.arange(ell)).expand(B, ell)

    def query_index(self, ell, past_len):
        """Index of each new query among all keys (for the causal mask and ALiBi)."""
        return past_len + torch.arange(ell)

    def allowed(self, ell, past_len, key_keep):
        """``(B, 1, ℓ_q, ℓ_k)``: query q may read key k (causal, bottom-right aligned, and not
        padding)."""
        k = torch.arange(past_len + ell)
        mask = key_keep[:, None, None, :]
        if self.causal:
            mask = mask & (k[None, :] <= self.query_index(ell, past_len)[:, None])
        return mask

    def masked_scores(self, scores, allowed):
        return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)

    def alibi(self, ell, past_len):
        """``(H, ℓ_q, ℓ_k)``: −slope · distance from each query to each key."""
        q = self.query_index(ell, past_len)[:, None]
        k = torch.arange(past_len + ell)[None, :]
        return -self.slopes[:, None, None] * (q - k).abs()

    def normalise(self, ln, h):
        return ln(h)

    def dropout(self, h):
        return h

    def finish(self, logits):
        return logits

    def store(self, k, v):
        """What the cache keeps of this layer's keys and values."""
        return k, v

    # ---- the forward pass --------------------------------------------------------------------

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False):  # fmt: skip
        B, ell = input_ids.shape
        past = past_key_values
        past_len = 0 if past is None else past["kv"][0][0].shape[2]
        if attention_mask is None:
            key_keep = torch.ones(B, past_len + ell, dtype=torch.bool)
        elif attention_mask.shape[1] == ell and past_len:
            key_keep = torch.cat([past["keep"], attention_mask.bool()], dim=1)
        else:
            key_keep = attention_mask.bool()
        pos = self.positions(B, ell, past_len, position_ids)
        h = self.tok(input_ids)
        if self.pos_kind == "learned":
            h = h + self.wpe(pos)
        allowed = self.allowed(ell, past_len, key_keep)
        bias = self.alibi(ell, past_len) if self.pos_kind == "alibi" else 0.0
        new_kv = []
        for i, blk in enumerate(self.blocks):
            a = self.normalise(blk.ln1, h)
            q, k, v = blk.qkv(a).view(B, ell, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
            if self.pos_kind == "rotary":
                q, k = _rotate(q, pos), _rotate(k, pos)
            if past is not None:
                k = torch.cat([past["kv"][i][0], k], dim=2)
                v = torch.cat([past["kv"][i][1], v], dim=2)
            new_kv.append(self.store(k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS) + bias
            weights = torch.softmax(self.masked_scores(scores, allowed), dim=-1)
            out = (self.dropout(weights) @ v).transpose(1, 2).reshape(B, ell, D)
            h = h + blk.proj(out)
            h = h + blk.mlp(self.normalise(blk.ln2, h))
        logits = self.finish(self.head(self.normalise(self.ln_f, h)))
        cache = {"kv": new_kv, "keep": key_keep} if use_cache else None
        return Output(logits, cache)


# ============================================================================ the broken zoo
# Each class: the bug, where it is seen, and the check that must catch it.


class LeakyCausalMask(TinyLM):
    """A hand-built causal mask one diagonal too wide: each token also reads the next one
    (a custom mask that leaks, nanoGPT #331). Caught by ``causality``."""

    def allowed(self, ell, past_len, key_keep):
        k = torch.arange(past_len + ell)
        q = self.query_index(ell, past_len)
        return key_keep[:, None, None, :] & (k[None, :] <= q[:, None] + 1)


class PaddingIgnored(TinyLM):
    """``attention_mask`` accepted and dropped: padded keys are read (TransformerLens #1005,
    batched generation differs from one at a time). Caught by ``padding_left``."""

    def allowed(self, ell, past_len, key_keep):
        return super().allowed(ell, past_len, torch.ones_like(key_keep))


class PaddingOnQueryAxis(TinyLM):
    """The padding mask broadcast over the query axis instead of the key axis (bug class 4):
    padded queries are masked, padded keys are read. Caught by ``padding_left``."""

    def allowed(self, ell, past_len, key_keep):
        causal = super().allowed(ell, past_len, torch.ones_like(key_keep))
        return causal & key_keep[:, -ell:][:, None, :, None]  # (B, 1, ℓ_q, 1): over queries


class PositionIdsIgnored(TinyLM):
    """Learned positions from ``arange(ℓ)`` whatever ``position_ids`` says: left-padded prompts
    put their first real token at position n_pad (bug class 8). Caught by ``padding_left``."""

    def positions(self, B, ell, past_len, position_ids):
        return super().positions(B, ell, past_len, None)


class CachePositionOffByOne(TinyLM):
    """Under the cache the new token is given position ``cache_length + 1`` (bug class 7,
    x-transformers #322-like cached decoding divergence). Caught by ``cache``."""

    def positions(self, B, ell, past_len, position_ids):
        if past_len:
            return (past_len + 1 + torch.arange(ell)).expand(B, ell)
        return super().positions(B, ell, past_len, position_ids)


class RotaryOffsetUnderCache(TinyLM):
    """Rotary embedding under the cache rotates the new query and key as if at position 0..ℓ_new
    (the offset of the cache forgotten; torchtune #959-like). Caught by ``cache``."""

    def __init__(self):
        super().__init__(pos="rotary")

    def positions(self, B, ell, past_len, position_ids):
        return super().positions(B, ell, 0, position_ids)


class AlibiOffsetUnderCache(TinyLM):
    """ALiBi's distances computed from the query's index in the new chunk, not its absolute
    position: under a cache the rows are misaligned (TransformerLens #776). Caught by ``cache``."""

    def __init__(self):
        super().__init__(pos="alibi")

    def alibi(self, ell, past_len):
        q = torch.arange(ell)[:, None]  # the bug: should be past_len + arange(ℓ)
        k = torch.arange(past_len + ell)[None, :]
        return -self.slopes[:, None, None] * (q - k).abs()


class TopLeftCausalMask(TinyLM):
    """The causal triangle aligned to the top left when queries and keys differ in number
    (``tril(ones(ℓ_q, ℓ_k))``): under a cache the newest query sees only the first keys
    (bug class 3). Caught by ``cache``."""

    def query_index(self, ell, past_len):
        return torch.arange(ell)


class BatchStatistics(TinyLM):
    """Normalisation statistics over the batch and the features (a BatchNorm-like slip): each
    example's outputs depend on the others (bug class 14). Caught by ``batch``."""

    def normalise(self, ln, h):
        m = h.mean(dim=(0, 2), keepdim=True)
        v = h.var(dim=(0, 2), keepdim=True, unbiased=False)
        return (h - m) / torch.sqrt(v + 1e-5) * ln.weight + ln.bias


class NaNOnPadding(TinyLM):
    """Masked scores set to ``−inf``: a left-padded query whose every key is padding gets
    softmax(all −inf) = NaN, and 0 · NaN spreads it (bug class 1). Caught by ``distributions``."""

    def masked_scores(self, scores, allowed):
        return scores.masked_fill(~allowed, float("-inf"))


class SoftmaxOverPositions(TinyLM):
    """Returns probabilities normalised over the positions instead of the vocabulary (softmax
    over the wrong axis, seen in transcriptions of the paper). Caught by ``distributions``
    (adapt with ``output="probs"``)."""

    def finish(self, logits):
        return torch.softmax(logits, dim=1)


class DropoutAlwaysOn(TinyLM):
    """Attention dropout with ``training=True`` hard-coded: ``model.eval()`` does not switch it
    off. Caught by ``determinism``."""

    def dropout(self, h):
        return F.dropout(h, p=0.2, training=True)


class NaNHeadRow(TinyLM):
    """One row of the output layer is NaN (a corrupted checkpoint): the logit of vocabulary entry
    3 is NaN at every position, and nothing moves. Caught by the ``finite`` precondition, which
    marks the comparing checks not meaningful instead of failing them with a wrong cause."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with torch.no_grad():
            self.head.weight[3] = float("nan")


class WideHead(TinyLM):
    """An output layer with 2 more columns than the declared vocabulary (``VOCAB + 2`` logits).
    Caught by every check (the adapter refuses the output's shape)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.head = nn.Linear(D, VOCAB + 2)


class SoftMaskForOnePad(TinyLM):
    """When exactly one key of a row is padding (a fast path for nearly full batches), it gets
    score −20 instead of the most negative float: weight ~e⁻²⁰, invisible to perturbation, not to
    the gradient. Caught by ``padding_left``'s gradient on its 1-token case (the 3-token case is
    healthy)."""

    def allowed(self, ell, past_len, key_keep):
        self.soft_pad = ~key_keep[:, None, None, :] if (~key_keep).sum(-1).eq(1).any() else None
        return super().allowed(ell, past_len, key_keep)

    def masked_scores(self, scores, allowed):
        hard = super().masked_scores(scores, allowed)
        if self.soft_pad is None:
            return hard
        return torch.where(self.soft_pad, torch.full_like(hard, -20.0), hard)


class LeakBeyond16(TinyLM):
    """A "long sequence" path (over 16 keys) whose causal mask is one diagonal too wide: every
    short input is healthy. Caught by ``causality``'s probe beyond 16 tokens."""

    def allowed(self, ell, past_len, key_keep):
        if past_len + ell <= 16:
            return super().allowed(ell, past_len, key_keep)
        k = torch.arange(past_len + ell)
        wide = k[None, :] <= self.query_index(ell, past_len)[:, None] + 1
        return key_keep[:, None, None, :] & wide


class UnseededSampler(TinyLM):
    """Its own ``generate`` samples with a fresh generator seeded from the clock: the same seed
    gives different texts. Caught by ``determinism``."""

    def generate(self, input_ids, max_new_tokens, do_sample=False, use_cache=True, **kwargs):
        import time

        rng = np.random.default_rng(time.perf_counter_ns())
        x = input_ids
        for _ in range(max_new_tokens):
            p = torch.softmax(self(x).logits[:, -1].double(), -1).numpy()
            if do_sample:
                nxt = [rng.choice(len(row), p=row / row.sum()) for row in p]
            else:
                nxt = p.argmax(-1)
            x = torch.cat([x, torch.as_tensor(np.asarray(nxt)).long()[:, None]], dim=1)
        return x


class CacheQuantisedInBfloat16(TinyLM):
    """A key-value cache quantised to 2 bits per entry (−1, 0, 1 times the largest |entry|) when
    the model runs in bfloat16, a memory saving switched on with low precision; float32 is exact.
    Seen by: bfloat16 (cached decoding far beyond the stated drift)."""

    def store(self, k, v):
        if k.dtype != torch.bfloat16:
            return k, v
        return tuple((a / a.abs().max()).round() * a.abs().max() for a in (k, v))


class EncoderWithCausalMask(TinyLM):
    """An encoder (no positions) that kept the decoder's causal mask: it is no longer
    permutation-equivariant, and position 0 reads one token only. Caught by ``permutation``."""

    def __init__(self):
        super().__init__(pos="none", causal=False)

    def allowed(self, ell, past_len, key_keep):
        k = torch.arange(past_len + ell)
        return key_keep[:, None, None, :] & (k[None, :] <= self.query_index(ell, past_len)[:, None])


class EncoderPaddingOnQueryAxis(TinyLM):
    """A bidirectional encoder whose padding mask masks the padded queries instead of the padded
    keys: real tokens read the padding (bug class 4). Caught by ``padding_right``."""

    def __init__(self):
        super().__init__(pos="none", causal=False)

    def allowed(self, ell, past_len, key_keep):
        return key_keep[:, None, :, None].expand(-1, 1, ell, past_len + ell)  # over queries


class TinySeq2Seq(nn.Module):
    """``torch.nn.Transformer`` (Algorithm 8 with Post-LN, no positions) with a shared token
    embedding and an unembedding: ``forward(input_ids=z, decoder_input_ids=x, attention_mask=
    z's padding)``. Healthy: the decoder is causal and reads the context as a set."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, D)
        # nn.Transformer's own encoder, without the nested-tensor fast path, whose prototype
        # warning would be recorded in every padded report (the outputs are the same)
        layer = nn.TransformerEncoderLayer(D, HEADS, 2 * D, dropout=0.0, batch_first=True)
        encoder = nn.TransformerEncoder(layer, 1, nn.LayerNorm(D), enable_nested_tensor=False)
        self.transformer = nn.Transformer(
            d_model=D, nhead=HEADS, num_encoder_layers=1, num_decoder_layers=1,
            dim_feedforward=2 * D, dropout=0.0, batch_first=True, custom_encoder=encoder,
        )  # fmt: skip
        self.head = nn.Linear(D, VOCAB)
        self.eval()

    def tgt_mask(self, ell):
        return torch.triu(torch.ones(ell, ell, dtype=torch.bool), diagonal=1)  # True: masked

    def forward(self, input_ids, decoder_input_ids, attention_mask=None):
        pad = None if attention_mask is None else attention_mask == 0
        ell = decoder_input_ids.shape[1]
        out = self.transformer(
            self.embed(input_ids), self.embed(decoder_input_ids),
            tgt_mask=self.tgt_mask(ell), src_key_padding_mask=pad, memory_key_padding_mask=pad,
        )  # fmt: skip
        return self.head(out)


class Seq2SeqWithoutTargetMask(TinySeq2Seq):
    """``nn.Transformer`` called without ``tgt_mask``: the decoder reads the whole target during
    training, a bug that trains beautifully and generates garbage. Caught by ``causality``."""

    def tgt_mask(self, ell):
        return torch.zeros(ell, ell, dtype=torch.bool)


# Each broken model, how to adapt it, and the check that must catch it.
BROKEN = {
    "leaky causal mask": (LeakyCausalMask, {}, "causality"),
    "padding ignored": (PaddingIgnored, {}, "padding_left"),
    "padding mask on the query axis": (PaddingOnQueryAxis, {}, "padding_left"),
    "position ids ignored under left padding": (PositionIdsIgnored, {}, "padding_left"),
    "cache position off by one": (CachePositionOffByOne, {}, "cache"),
    "rotary offset lost under the cache": (RotaryOffsetUnderCache, {}, "cache"),
    "ALiBi offset lost under the cache": (AlibiOffsetUnderCache, {}, "cache"),
    "causal mask aligned top-left under the cache": (TopLeftCausalMask, {}, "cache"),
    "normalisation over the batch": (BatchStatistics, {}, "batch"),
    "NaN from fully masked padding rows": (NaNOnPadding, {}, "distributions"),
    "softmax over positions": (SoftmaxOverPositions, {"output": "probs"}, "distributions"),
    "dropout always on": (DropoutAlwaysOn, {}, "determinism"),
    "unseeded sampler": (UnseededSampler, {}, "determinism"),
    "a 2-bit cache in bfloat16": (CacheQuantisedInBfloat16, {}, "bfloat16"),
    "encoder with a causal mask": (
        EncoderWithCausalMask,
        {"kind": "masked", "positions": False},
        "permutation",
    ),  # fmt: skip
    "encoder padding on the query axis": (
        EncoderPaddingOnQueryAxis,
        {"kind": "masked", "positions": False},
        "padding_right",
    ),  # fmt: skip
    "seq2seq without a target mask": (
        Seq2SeqWithoutTargetMask,
        {"kind": "seq2seq", "positions": False},
        "causality",
    ),  # fmt: skip
}
