"""compare beyond one sequence (issue 27): a padded batch (left and right padding, attention
mask and position ids) and the last token through the model's own KV cache, each compared with
the paper's algorithm; departures that show only there are located and named."""

import numpy as np
import pytest
import torch
from test_compare import X, bert, gpt2, llama, transformer

from formal_algorithms.interop.compare import compare, compare_batch, compare_cached
from formal_algorithms.interop.departures import inject

SEQUENCES = [X, X[:5], X[2:8]]  # lengths 9, 5, 6: two of them padded


@pytest.mark.parametrize("make", [gpt2, bert, llama], ids=["gpt2", "bert", "llama"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_a_padded_batch_of_a_healthy_model_is_equal(make, padding):
    reports = compare_batch(make(), SEQUENCES, padding=padding)
    assert [r.departs for r in reports] == [False, False, False]
    assert [r.tokens for r in reports] == [s.tolist() for s in SEQUENCES]
    assert len({len(r.rows) for r in reports}) == 1 and f"{padding} padding" in reports[1].model
    assert not any("padding mask" in c for r in reports for c in r.causes + r.ruled_out)


def test_padding_masked_over_the_queries_is_found_in_left_padded_sequences_only():
    """A padded key is seen by the real queries when padding is on the left; on the right the
    causal mask already hides every pad key from every real query (by hand), so it is EQUAL."""
    reports = compare_batch(inject(gpt2(), "padding-on-queries"), SEQUENCES, padding="left")
    assert [r.departs for r in reports] == [False, True, True]  # the unpadded one agrees
    first = reports[1].first
    assert (first.algorithm, first.line, first.indices, first.tag) == (4, 6, {"l": 1, "h": 1}, "A")
    assert first.column == 1  # the first real token already attends to padding
    evidence = reports[1].evidence
    assert "appears only when they are padded (left padding)" in evidence[0]
    assert all("padding not masked over the keys t_z" in e for e in evidence[1:]), evidence
    assert any("padding mask on the wrong axis" in c for c in reports[1].causes)
    right = compare_batch(inject(gpt2(), "padding-on-queries"), SEQUENCES, padding="right")
    assert not any(r.departs for r in right)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_the_last_token_through_the_models_cache_is_the_papers_last_column(make):
    report = compare_cached(make(), X)
    assert not report.departs and report.rows
    assert all(row.shape[-1] == 1 for row in report.rows if len(row.shape) == 2)
    assert f"token {len(X)} through its cache of {len(X) - 1}" in report.model


def test_keys_cached_before_rope_are_found_only_through_the_cache():
    model = inject(llama(), "cache-before-rope")
    assert not compare(model, X).departs  # one pass: the keys are rotated right
    report = compare_cached(model, X)
    first = report.first
    assert (first.algorithm, first.line, first.indices, first.tag) == (4, 6, {"l": 1, "h": 1}, "A")
    assert first.column == len(X)
    assert "appears only when they are read through its cache" in report.evidence[0]
    assert report.evidence[1:] == [
        "heads 1, 2, 3, 4: the model's weights are those of RoPE with every cached key rotated by "
        "the step's position (keys cached before RoPE, rotated when read)"
    ], report.evidence


def test_bad_batches_name_the_argument():
    """Each refusal names the function called (issue 29: not ``compare``)."""
    with pytest.raises(
        ValueError, match=r"^compare_batch: argument 'padding' must be 'left' or 'right'"
    ):
        compare_batch(gpt2(), SEQUENCES, padding="middle")
    with pytest.raises(TypeError, match=r"^compare_batch: argument 'sequences'"):
        compare_batch(gpt2(), [])
    with pytest.raises(ValueError, match=r"^compare_batch: argument 'sequences\[1\]'"):
        compare_batch(gpt2(), [X, np.array([])])
    with pytest.raises(ValueError, match=r"^compare_cached: argument 'x' needs at least 2 tokens"):
        compare_cached(gpt2(), X[:1])
    with pytest.raises(ValueError, match=r"^compare_cached: argument 'tolerance'"):
        compare_cached(gpt2(), X, tolerance=float("nan"))
    model, _ = transformer()
    with pytest.raises(
        TypeError, match=r"^compare_cached: argument 'model' is a torch.nn.Transformer"
    ):
        compare_cached(model, X)
    assert torch is not None
