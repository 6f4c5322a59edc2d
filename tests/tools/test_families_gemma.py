"""The Gemma family (formal_algorithms.families.gemma) against transformers' GemmaForCausalLM.

Random float64 weights (norms, embeddings drawn away from their inits), with transformers'
float32 internals (RMSnorm, RoPE angles) replaced by float64 ones so that the comparison is of the
math: logits within 1e-10 relative, in two configurations (grouped-query with a head dimension of
its own; multi-head); 8 greedy tokens of Algorithm 14 equal ``generate``'s, uncached and through
the cached decoder (whose logits, in two blocks, equal the full forward's to 1e-12); a keyword
contradicting θ's configuration is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from test_families_more import (
    X,
    _float64_internals,
    _greedy,
    _greedy_ours,
    _randomise,
    _state,
    _two_blocks,
)

from formal_algorithms.families.gemma import (
    gemma,
    gemma_config,
    gemma_from_state_dict,
    gemma_logits,
)
from formal_algorithms.families.llama import Decoder


def _float64_gemma_norms(model):
    """Gemma's RMSnorm, ``(1 + γ) · x / rms(x)``, in float64 (transformers casts to float32)."""

    def rms(m):
        def forward(h):
            return (1 + m.weight) * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.eps))

        return forward

    for m in model.modules():
        if type(m).__name__ == "GemmaRMSNorm":
            m.forward = rms(m)


@pytest.mark.parametrize(("G", "head_dim"), [(2, 12), (4, 8)])
def test_gemma_equals_transformers_random_float64(G, head_dim):
    config = transformers.GemmaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=G, head_dim=head_dim,
        max_position_embeddings=64, rope_theta=1e4, rms_norm_eps=1e-6, attn_implementation="sdpa",
    )  # fmt: skip
    model = _randomise(transformers.GemmaForCausalLM(config), seed=G + head_dim)
    _float64_internals(model, model.model.rotary_emb, head_dim, 1e4)
    _float64_gemma_norms(model)
    kw = gemma_config(config.to_dict())
    theta = gemma_from_state_dict(_state(model, True), **kw)
    assert theta.W_u is None and theta.layers[0].W.W_q.shape == (4, head_dim, 32)
    with torch.no_grad():
        expected = model(torch.tensor(X)[None]).logits[0].numpy().T
    ours = np.asarray(gemma_logits(X, theta))
    assert ours.dtype == np.float64
    assert np.abs(ours - expected).max() / np.abs(expected).max() <= 1e-10
    np.testing.assert_allclose(np.asarray(gemma(X, theta)).sum(0), 1, atol=1e-12)
    greedy = _greedy(model, X[:3], 8)
    assert _greedy_ours(gemma_logits, theta) == greedy
    # cached: Llama's decoder reads Gemma's config; its logits are the full forward's columns
    decoder = Decoder(theta)
    assert decoder.generate(X[:3], max_new=8) == greedy
    assert np.abs(_two_blocks(decoder) - ours).max() <= 1e-12 * np.abs(ours).max()
    with pytest.raises(ValueError, match=r"gemma_logits .*argument 'eps' = 1e-05 contradicts"):
        gemma_logits(X, theta, eps=1e-5)


def test_gemma_refuses_what_it_does_not_write():
    config = transformers.GemmaConfig(vocab_size=9, hidden_size=8, num_attention_heads=2,
                                      num_key_value_heads=1, num_hidden_layers=1).to_dict()  # fmt: skip
    with pytest.raises(ValueError, match=r"gemma_config: .*activation 'silu'"):
        gemma_config({**config, "hidden_activation": "silu", "hidden_act": "silu"})
    with pytest.raises(ValueError, match=r"gemma_config: .*RoPE scaling 'linear'"):
        gemma_config({**config, "rope_parameters": {"rope_type": "linear", "factor": 2.0}})
