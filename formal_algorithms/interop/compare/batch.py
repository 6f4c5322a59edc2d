"""Beyond one sequence: a padded batch, and incremental decoding through the model's own cache.

:func:`compare_batch` runs a Hugging Face model once on a padded batch (left or right padding,
the attention mask and the position ids a caller passes) and compares each sequence's real
positions with the paper's algorithm run on that sequence alone. :func:`compare_cached` runs the
model on all tokens but the last, then on the last one through the cache it returned, and
compares that step with the last column of the paper's run (the cached form computes exactly
that column). A departure that shows only there (a padding mask on the wrong axis, keys cached
before RoPE) is located at its line and named: when the same model is EQUAL unpadded or without
its cache, the evidence says so.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ...paper.checks import fail
from . import check_fits, compare, comparison, session, token_ids

__all__ = ["compare_batch", "compare_cached"]


class _Sliced:
    """The captured values of sequence ``b`` at its real positions ``keep``."""

    def __init__(self, store, b, keep):
        self.store, self.b, self.keep = store, b, keep

    def get(self, path, which="out", item=0):
        value = self.store.get(path, which, item)
        if value is None or value.ndim < 2:
            return value
        value = value[self.b : self.b + 1]
        if value.ndim == 4:  # attention weights (1, H, ℓ_x, ℓ_z)
            return value[:, :, self.keep][..., self.keep]
        return value[:, self.keep]


def compare_batch(model, sequences, *, padding="right", float64=False, tolerance=None):
    """One :class:`~.report.Report` per sequence of ``sequences`` (1-D token ids of any lengths),
    from one run of ``model`` on them padded (``padding`` "left" or "right") with the attention
    mask and position ids 0 … n_b − 1 of each sequence's real tokens."""
    where = "compare_batch"
    _hugging_face(model, where)
    if padding not in ("left", "right"):
        fail(where, "padding", f"must be 'left' or 'right', got {padding!r}")
    if not isinstance(sequences, list | tuple) or not sequences:
        fail(where, "sequences", "must be a non-empty list of token sequences", TypeError)
    xs = [token_ids(where, f"sequences[{i}]", s) for i, s in enumerate(sequences)]
    T = max(len(x) for x in xs)
    ids, mask = np.zeros((len(xs), T), np.int64), np.zeros((len(xs), T), np.int64)
    for b, x in enumerate(xs):
        real = slice(T - len(x), T) if padding == "left" else slice(0, len(x))
        ids[b, real], mask[b, real] = x, 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    with session(where, model, float64, tolerance) as family:
        for i, x in enumerate(xs):
            check_fits(where, family, f"sequences[{i}]", x)
        family.call = lambda: model(
            torch.as_tensor(ids),
            attention_mask=torch.as_tensor(mask),
            position_ids=torch.as_tensor(positions),
        )
        family.x, family.padded = xs[0], True
        store, output = family.capture()
        reports = []
        for b, x in enumerate(xs):
            family.x = x
            keep = np.flatnonzero(mask[b])
            captured = family.read(_Sliced(store, b, keep), output)
            report = comparison(
                family,
                f"{type(model).__name__} (sequence {b + 1} of {len(xs)}, {padding} padding)",
                tolerance,
                captured=captured,
            )
            reports.append(report)
    for x, report in zip(xs, reports, strict=True):
        if report.departs and len(x) < T:
            _alone(model, x, report, float64, tolerance, f"padded ({padding} padding)")
    return reports


def compare_cached(model, x, *, float64=False, tolerance=None):
    """The last token of ``x`` through the model's own cache (the model run on ``x[:-1]`` with
    ``use_cache=True`` first) against the last column of the paper's run on ``x``."""
    where = "compare_cached"
    _hugging_face(model, where)
    x = token_ids(where, "x", x)
    if len(x) < 2:
        fail(where, "x", f"needs at least 2 tokens (a prefix to cache and a step), got {len(x)}")
    n = len(x)

    def call():
        prefix = model(torch.as_tensor(x[None, :-1]), use_cache=True)
        cache = getattr(prefix, "cache", None) or prefix.past_key_values
        name = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        return model(
            torch.as_tensor(x[None, -1:]),
            use_cache=True,
            position_ids=torch.tensor([[n - 1]]),
            **{name: cache},
        )

    with session(where, model, float64, tolerance) as family:
        if family.algorithm != 10:  # an encoder has no cache; an encoder-decoder needs z
            what = f"is a {type(model).__name__}, read as Algorithm {family.algorithm}"
            fail(where, "model", f"{what}: {where} reads a decoder-only model's key/value cache")
        check_fits(where, family, "x", x)
        family.x, family.call = x, call
        name = f"{type(model).__name__} (token {n} through its cache of {n - 1})"
        report = comparison(family, name, tolerance, last_column=True)
    if report.departs:
        _alone(model, x, report, float64, tolerance, "read through its cache")
    return report


def _hugging_face(model, where):
    if isinstance(model, torch.nn.Transformer):
        fail(
            where,
            "model",
            f"is a torch.nn.Transformer; {where} takes a Hugging Face model "
            "(its attention mask, position ids and cache)",
            TypeError,
        )


def _alone(model, x, report, float64, tolerance, how):
    """The evidence that the departure comes with the padding or the cache: the same tokens in
    one plain pass are EQUAL (a computation made for this report)."""
    plain = compare(model, x, float64=float64, tolerance=tolerance)
    if not plain.departs:
        report.evidence.insert(
            0,
            f"the same {len(x)} tokens in one pass, unpadded and without a "
            f"cache, are EQUAL to the paper: the departure appears only when "
            f"they are {how}",
        )
