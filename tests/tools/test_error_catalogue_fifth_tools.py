"""Bad inputs the fifth held-back catalogue found in the tools (issue 29), each now refused naming
the function called and the argument: the testing toolkit (adapters, checkers, strategies, the
battery) and compare_batch / compare_cached. The catalogue itself, and its score before these
fixes, are in algorithms.md's "Errors"."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

import formal_algorithms as fa
from formal_algorithms.interop.compare import compare_batch, compare_cached
from formal_algorithms.practice.checkpoint import load_checkpoint
from formal_algorithms.testing import (
    check_cache,
    check_causality,
    check_layer_norm,
    check_layer_norm_columns,
    check_padding,
    dims,
    from_callable,
    from_hf,
    from_paper,
    masks,
    params,
    probe_lengths,
    run_battery,
    token_sequences,
)

THETA = fa.init_d_transformer(jax.random.key(0), N_V=7, ell_max=8, L=1, H=2, d_e=4, d_mlp=8)


def logits(x):
    """Algorithm 10 of a θ with ℓ_max = 8: it refuses a longer x by name."""
    return fa.d_transformer_logits(x, THETA)


def _model(**options):
    return from_paper(logits, N_V=7, **options)  # the adapter is told no max_length by default


def _gpt2():
    config = GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=1, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                        eos_token_id=None)  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def _bert():
    config = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)  # fmt: skip
    return BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny GPT-2 saved as from_hf reads it (a good directory: only the argument is bad)."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    _gpt2().save_pretrained(path)
    return path


# name: (call of the saved directory, exception type, regex on the message)
CASES = {
    # 1. a bare KeyError 'bogus' from the table of Auto classes
    "from_hf-kind": (
        lambda d: from_hf(d, kind="bogus"),
        ValueError,
        r"^from_hf: argument 'kind' must be one of \('causal', 'masked', 'seq2seq'\), got 'bogus'",
    ),
    # 2. AttributeError: 'function' object has no attribute 'kind'
    "check_causality-function": (
        lambda d: check_causality(logits),
        TypeError,
        r"^check_causality: argument 'model' must be a TokenModel .*got function",
    ),
    "check_cache-function": (
        lambda d: check_cache(logits),
        TypeError,
        r"^check_cache: argument 'model' must be a TokenModel",
    ),
    "probe_lengths-function": (
        lambda d: probe_lengths(logits),
        TypeError,
        r"^probe_lengths: argument 'model' must be a TokenModel",
    ),
    "check_padding-side": (
        lambda d: check_padding(_model(), "middle"),
        ValueError,
        r"^check_padding: argument 'side' must be 'left' or 'right', got 'middle'",
    ),
    "check_padding-amounts": (
        lambda d: check_padding(_model(), amounts=(1, 0)),
        ValueError,
        r"^check_padding: argument 'amounts' = 0 must be at least 1",
    ),
    # 3. the checker's own ε = -1 was taken; a wrong verdict blamed the function under test
    "check_layer_norm-eps": (
        lambda d: check_layer_norm(fa.layer_norm, jnp.ones(4), eps=-1),
        ValueError,
        r"^check_layer_norm: argument 'eps' must be a finite number >= 0, got -1",
    ),
    "check_layer_norm-eps-nan": (
        lambda d: check_layer_norm(fa.layer_norm, jnp.arange(4.0), eps=float("nan")),
        ValueError,
        r"^check_layer_norm: argument 'eps' must be a finite number >= 0, got nan",
    ),
    "check_layer_norm_columns-eps": (
        lambda d: check_layer_norm_columns(fa.layer_norm_columns, jnp.ones((4, 2)), eps=-1e-5),
        ValueError,
        r"^check_layer_norm_columns: argument 'eps' must be a finite number >= 0",
    ),
    # 4. ERROR rows and "VIOLATES the invariants above", blaming the model for the length
    "run_battery-length": (
        lambda d: run_battery(_model(), length=100),
        ValueError,
        r"^run_battery: argument 'length' = 100: logits raises on an input of 100 tokens "
        r"\(ValueError: .*length 100 > ell_max = 8\) but takes 2: .*max_length=",
    ),
    "run_battery-lengths": (
        lambda d: run_battery(_model(), checks=["causality"], lengths=[4, 30]),
        ValueError,
        r"^run_battery: argument 'lengths' = 30: logits raises on an input of 30 tokens",
    ),
    # 5. the prompt came back unchanged
    "generate-n": (
        lambda d: _model().generate(jnp.array([[1, 2]]), n=-1),
        ValueError,
        r"^logits\.generate: argument 'n' = -1 must be at least 0",
    ),
    "generate_until-n": (
        lambda d: _model().generate_until(np.array([[1, 2]]), 2.5),
        TypeError,
        r"^logits\.generate_until: argument 'n' must be an integer, got 2.5",
    ),
    # 6. accepted, failing only when Hypothesis drew
    "token_sequences-N_V": (
        lambda d: token_sequences(N_V=0),
        ValueError,
        r"^token_sequences: argument 'N_V' = 0 must be at least 4",
    ),
    "token_sequences-lengths": (
        lambda d: token_sequences(9, lengths=()),
        ValueError,
        r"^token_sequences: argument 'lengths' is empty",
    ),
    "dims-values": (
        lambda d: dims((2, 0)),
        ValueError,
        r"^dims: argument 'values' = 0 must be at least 1",
    ),
    "masks-kind": (
        lambda d: masks(3, 3, kind="causal"),
        ValueError,
        r"^masks: argument 'kind' must be one of \('any', 'bidirectional', 'unidirectional', "
        r"'padding'\), got 'causal'",
    ),
    "params-perturb": (
        lambda d: params(fa.init_d_transformer, perturb=float("nan")),
        ValueError,
        r"^params: argument 'perturb' must be a finite number >= 0, got nan",
    ),
    # 7. each said "compare: argument …"
    "compare_batch-empty": (
        lambda d: compare_batch(_gpt2(), []),
        TypeError,
        r"^compare_batch: argument 'sequences' must be a non-empty list",
    ),
    "compare_batch-padding": (
        lambda d: compare_batch(_gpt2(), [[1, 2], [3]], padding="middle"),
        ValueError,
        r"^compare_batch: argument 'padding' must be 'left' or 'right', got 'middle'",
    ),
    "compare_cached-one-token": (
        lambda d: compare_cached(_gpt2(), [5]),
        ValueError,
        r"^compare_cached: argument 'x' needs at least 2 tokens",
    ),
    "compare_cached-tolerance": (
        lambda d: compare_cached(_gpt2(), [1, 2, 3], tolerance=0),
        ValueError,
        r"^compare_cached: argument 'tolerance' must be a finite number > 0, got 0",
    ),
    "compare_batch-empty-sequence": (
        lambda d: compare_batch(_gpt2(), [[1, 2], []]),
        ValueError,
        r"^compare_batch: argument 'sequences\[1\]' must be a non-empty 1-D sequence",
    ),
    "compare_batch-model": (
        lambda d: compare_batch(torch.nn.Linear(2, 2), [[1, 2]]),
        TypeError,
        r"^compare_batch: argument 'model' must be a GPT2LMHeadModel",
    ),
    # the sixth catalogue: a model with dropout on was refused by the GPT-2 converter, naming
    # d_transformer_from_gpt2 and a module; an encoder reached a raw AttributeError ('cache')
    "compare_batch-training-mode": (
        lambda d: compare_batch(_gpt2().train(), [[1, 2], [3, 4]]),
        ValueError,
        r"^compare_batch: argument 'model' is in training mode; call model.eval\(\)",
    ),
    "compare_cached-encoder": (
        lambda d: compare_cached(_bert(), [1, 2, 3]),
        ValueError,
        r"^compare_cached: argument 'model' is a BertForMaskedLM, read as Algorithm 9: "
        r"compare_cached reads a decoder-only model's key/value cache",
    ),
    # "load_checkpoint: checkpoint 'x' does not exist" named no argument
    "load_checkpoint-missing": (
        lambda d: load_checkpoint(d / "none.safetensors"),
        FileNotFoundError,
        r"^load_checkpoint: argument 'path' = '.*none\.safetensors' does not exist",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_fifth_catalogues_tool_cases_are_refused_by_name(name, folder):
    call, error, message = CASES[name]
    with pytest.raises(error, match=message):
        call(folder)


def test_a_probe_length_the_model_raises_on_is_not_run_not_a_violation():
    """The battery's own probe of 20 tokens, beyond the ℓ_max = 8 the adapter was not told: the
    row is N/R after the length that passed, and the verdict NOT VERIFIED (not VIOLATES)."""
    report = run_battery(_model(), checks=["causality"])
    row = report["causality"]
    assert row.status == "not run" and report.verdict == "unverified", str(report)
    assert row.message.startswith("ℓ = 8: 8 positions") and "ℓ = 20: not run:" in row.message
    assert "max_length=" in row.message and "NOT VERIFIED" in str(report)
    assert "1 not run" in str(report) and report.to_dict()["counts"]["not run"] == 1
    told = run_battery(_model(max_length=8), checks=["causality"])
    assert told.verdict == "conforms" and "not run" not in told.to_dict()["counts"], str(told)


def test_a_model_that_raises_at_every_length_is_still_its_error():
    """Not a length: a model that takes not even 2 tokens is reported, not refused."""

    def broken(ids):
        raise RuntimeError("broken")

    report = run_battery(from_callable(broken, vocab_size=7), checks=["causality"], length=12)
    assert report["finite"].status == "error" and report.verdict == "violates", str(report)


def test_generating_no_token_returns_the_prompt():
    x = np.array([[1, 2]])
    tokens, steps = _model().generate(x, 0, return_logits=True)
    assert np.array_equal(tokens, x) and steps.shape == (1, 0, 7)
