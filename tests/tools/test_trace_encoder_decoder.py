"""The trace on the encoder-decoder families (issue 30): ``fa.trace`` of ``t5_logits`` and
``bart_logits`` records Algorithm 8's lines, and the values at the lines transformers exposes
equal transformers' own (random float64 models): the encoder's output Z (T5: line 9, after the
final RMS norm; BART: line 8 of the last layer, Post-LN) and the logits of line 21. The
expectation is transformers' forward, not the code under test."""

import numpy as np
import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
)

import formal_algorithms as fa
from formal_algorithms.families.bart import bart_config, bart_from_state_dict, bart_logits
from formal_algorithms.families.t5 import t5_config, t5_from_state_dict, t5_logits

Z_TOKENS = np.array([3, 7, 1, 39, 22, 5])


def _randomised(model, seed):
    torch.manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def bart():
    config = BartConfig(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=24,
                        decoder_ffn_dim=24, max_position_embeddings=32)  # fmt: skip
    model = _randomised(BartForConditionalGeneration(config), 1)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    theta = bart_from_state_dict(state, **bart_config(config.to_dict()))
    return model, theta, bart_logits, np.array([2, 0, 31, 7]), (8, 8, {"l": 2})


def t5():
    config = T5Config(vocab_size=40, d_model=16, d_kv=6, d_ff=24, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      relative_attention_num_buckets=8, relative_attention_max_distance=20)  # fmt: skip
    model = _randomised(T5ForConditionalGeneration(config), 2)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    theta = t5_from_state_dict(state, **t5_config(config.to_dict()))
    return model, theta, t5_logits, np.array([0, 5, 9, 3]), (8, 9, {})


@pytest.mark.parametrize("family", [bart, t5], ids=["bart", "t5"])
def test_trace_of_an_encoder_decoder_family_records_algorithm_8(family):
    model, theta, logits_fn, x, (alg, z_line, z_at) = family()
    trace = fa.trace(logits_fn, Z_TOKENS, x, theta)
    lines = {r.line for r in trace.find(8)}
    assert {3, 5, 7, 12, 14, 16, 18, 21} <= lines, sorted(lines)
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(Z_TOKENS)[None],
            decoder_input_ids=torch.as_tensor(x)[None],
        )
    Z_hf = out.encoder_last_hidden_state[0].numpy().T  # (d_e, ℓ_z)
    logits_hf = out.logits[0].numpy().T  # (N_V, ℓ_x)
    Z = np.asarray(trace.get(alg, z_line, **z_at))
    # T5's RMS norm variance is float32 in transformers even in float64 (docs/families.md)
    tol = 1e-6 if family is t5 else 1e-10
    assert Z.shape == Z_hf.shape
    assert np.abs(Z - Z_hf).max() <= tol * np.abs(Z_hf).max()
    logits = np.asarray(trace.get(8, 21, name="logits"))
    assert logits.shape == logits_hf.shape == (40, len(x))
    assert np.abs(logits - logits_hf).max() <= tol * np.abs(logits_hf).max()
    assert np.array_equal(logits, np.asarray(trace.result))  # the result is line 21's logits
