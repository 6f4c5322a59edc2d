"""Bad input to the variants and families (issue 29): each case raises the stated exception and
its message names the function and the argument; none returns a silently wrong value (JAX's
indexing clamps an id out of range, and its shape errors name neither)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa
from formal_algorithms.families import albert, bert
from formal_algorithms.variants import (
    alibi,
    classification,
    factorised,
    gated_mlp,
    linear_attention,
    partial_rope,
    performer,
    rope,
)
from formal_algorithms.variants import grouped_attention as ga

KEY = jax.random.key(0)
X = jax.random.normal(KEY, (8, 5))
W1 = fa.init_attention(KEY, d_x=8, d_z=8, d_attn=4, d_out=8)
W4 = fa.init_mh_attention(KEY, 4, 8, 8, 2, 2, 8)
E = fa.init_e_transformer(KEY, N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
HEAD = classification.init_classifier(KEY, E, 3)


def _bert():
    return bert.BertEncoderParams(
        E.W_e, E.W_p, jnp.zeros((8, 2)), jnp.ones(8), jnp.zeros(8), E.layers
    )


def _albert():
    d_emb = 8
    return albert.AlbertParams(
        E.W_e, E.W_p, jnp.zeros((d_emb, 2)), jnp.ones(d_emb), jnp.zeros(d_emb), jnp.eye(8),
        jnp.zeros(8), E.layers[0], jnp.eye(8), jnp.zeros(8), jnp.ones(8), jnp.zeros(8),
        jnp.zeros(11),
    )  # fmt: skip


def _gm(**changed):
    """gated_mlp's arguments for X (8, 5) with d_mlp = 16, ``changed`` replaced."""
    args = dict(X=X, W_gate=jnp.ones((16, 8)), b_gate=jnp.zeros(16), W_up=jnp.ones((16, 8)),
                b_up=jnp.zeros(16), W_down=jnp.ones((8, 16)), b_down=jnp.zeros(8))  # fmt: skip
    return {**args, **changed}


def _gqa_bad_k():
    return W4._replace(W_k=W4.W_k[:, :, :5])


CASES = [
    ("c_loss class 5 of 3", lambda: classification.c_loss(HEAD, jnp.asarray([1, 2, 3]), 5), ValueError, r"Classification.*'c' = 5 is not a class.*N_C = 3"),
    ("c_loss class -1", lambda: classification.c_loss(HEAD, jnp.asarray([1, 2, 3]), -1), ValueError, r"'c' = -1 is not a class"),
    ("c_loss class 1.0", lambda: classification.c_loss(HEAD, jnp.asarray([1, 2, 3]), 1.0), TypeError, r"'c' must be one integer class"),
    ("bert segment 5 of 2", lambda: bert.bert_encode(jnp.asarray([1, 2, 3]), _bert(), token_type_ids=[0, 5, 1]), ValueError, r"BERT.*'token_type_ids' holds 5, not a segment: W_tt has 2"),
    ("bert segments too short", lambda: bert.bert_encode(jnp.asarray([1, 2, 3]), _bert(), token_type_ids=[0, 1]), ValueError, r"'token_type_ids' has shape \(2,\), expected \(3,\)"),
    ("bert W_tt width", lambda: bert.bert_encode(jnp.asarray([1, 2]), _bert()._replace(W_tt=jnp.zeros((7, 2)))), ValueError, r"'params.W_tt' has shape \(7, 2\), expected \(8, n_types\)"),
    ("bert gamma_emb None", lambda: bert.bert_encode(jnp.asarray([1, 2]), _bert()._replace(gamma_emb=None)), ValueError, r"'params.gamma_emb' is None"),
    ("albert W_proj", lambda: albert.albert_logits(jnp.asarray([1, 2]), _albert()._replace(W_proj=jnp.eye(8)[:, :7]), L=1), ValueError, r"albert_logits.*'params.W_proj' has shape \(8, 7\)"),
    ("albert b_u", lambda: albert.albert_logits(jnp.asarray([1, 2]), _albert()._replace(b_u=jnp.zeros(10)), L=1), ValueError, r"'params.b_u' has shape \(10,\), expected \(11,\)"),
    ("shared_layers -1", lambda: factorised.shared_layers(E.layers[0], -1), ValueError, r"shared_layers.*'L'.*integer >= 1, got -1"),
    ("factorised W_proj", lambda: factorised.factorised_embed(jnp.asarray([1, 2]), E.W_e, E.W_p, jnp.eye(8)[:, :6], jnp.zeros(8)), ValueError, r"factorised_embed.*'W_proj' has shape \(8, 6\), expected \(d_out, 8\)"),
    ("rope W_q width", lambda: rope.rope_attention(X, X, W1._replace(W_q=W1.W_q[:, :7])), ValueError, r"rope_attention.*'W.W_q' has shape \(4, 7\), expected \(d_out, 8\)"),
    ("rope list of ints", lambda: rope.rope_attention([[1, 2]], X, W1), ValueError, r"rope_attention.*'X' must be a float matrix \(d, ℓ\).*list of shape \(1, 2\)"),
    ("rope t_x length", lambda: rope.rope_attention(X, X, W1, t_x=jnp.arange(4)), ValueError, r"'t_x' has shape \(4,\), expected \(5,\)"),
    ("rope Mask shape", lambda: rope.rope_attention(X, X, W1, jnp.ones((5, 4), bool)), ValueError, r"^rope_attention.*'Mask' has shape \(5, 4\), expected \(5, 5\)"),
    ("grouped W_k", lambda: ga.grouped_attention(X, X, _gqa_bad_k()), ValueError, r"grouped_attention.*'W.W_k' has shape \(4, 2, 5\), expected \(G, 2, 8\)"),
    ("alibi groups", lambda: alibi.alibi_mh_attention(X, X, W4._replace(W_k=W4.W_k[:2], b_k=W4.b_k[:2], W_v=W4.W_v[:2], b_v=W4.b_v[:2])), ValueError, r"alibi_mh_attention.*'W.W_k' holds 2 key sets for 4 heads"),
    ("gated W_up", lambda: gated_mlp.gated_mlp(X, jnp.ones((6, 8)), None, jnp.ones((5, 8)), None, jnp.ones((8, 6)), None), ValueError, r"gated_mlp.*'W_up' has shape \(5, 8\), expected \(6, 8\)"),
    ("draw_features key 0", lambda: performer.draw_features(0, 4, 2), TypeError, r"FAVOR\+.*'key'"),
    # the held-back catalogue of issue 29 (scratch/H29): each names the function and its argument
    ("rope_frequencies d 0", lambda: rope.rope_frequencies(0), ValueError, r"^rope_frequencies: argument 'd' = 0 must be at least 2"),
    ("rope_frequencies d odd", lambda: rope.rope_frequencies(3), ValueError, r"^rope_frequencies: argument 'd' = 3 must be even"),
    ("rope d_rot odd", lambda: rope.rope(X, jnp.arange(5), d_rot=3), ValueError, r"^rope: argument 'd_rot' = 3 must be even"),
    ("rope d_rot beyond d", lambda: rope.rope(X, jnp.arange(5), d_rot=16), ValueError, r"^rope: argument 'd_rot' = 16 exceeds the 8 rows"),
    ("rope X odd rows", lambda: rope.rope(jnp.ones((5, 3)), jnp.arange(3)), ValueError, r"^rope: argument 'X' has 5 rows, an odd number"),
    ("rope base nan", lambda: rope.rope(X, jnp.arange(5), base=float("nan")), ValueError, r"^rope: argument 'base' = nan must be a finite number > 0"),
    ("rope_attention Z rows", lambda: rope.rope_attention(X, jnp.ones((6, 5)), W1), ValueError, r"^rope_attention.*argument 'Z' has 6 rows, expected 8"),
    ("partial_rope d_rot odd", lambda: partial_rope.partial_rope(X, jnp.arange(5), d_rot=3), ValueError, r"^partial_rope: argument 'd_rot' = 3 must be even"),
    ("partial_rope_attention d_rot -2", lambda: partial_rope.partial_rope_attention(X, X, W4, d_rot=-2), ValueError, r"^partial_rope_attention.*argument 'd_rot' = -2 must be at least 0"),
    ("grouped rope_base -1", lambda: ga.grouped_attention(X, X, W4, rope_base=-1.0), ValueError, r"^grouped_attention.*argument 'rope_base' = -1.0 must be a finite number > 0"),
    ("head_group G not dividing H", lambda: ga.head_group(4, 3), ValueError, r"^head_group: argument 'G' = 3 must divide H = 4"),
    ("head_group G 0", lambda: ga.head_group(4, 0), ValueError, r"^head_group: argument 'G' = 0 must be at least 1"),
    ("alibi_slopes H 2.5", lambda: alibi.alibi_slopes(2.5), TypeError, r"^alibi_slopes: argument 'H' must be an integer, got 2.5"),
    ("alibi_slopes H 3", lambda: alibi.alibi_slopes(3), ValueError, r"^alibi_slopes: argument 'H' = 3 must be a power of two"),
    ("alibi_attention slope nan", lambda: alibi.alibi_attention(X, X, W1, float("nan")), ValueError, r"^alibi_attention.*argument 'm' \(the head's slope\) must be one finite number"),
    ("alibi_attention Z rows", lambda: alibi.alibi_attention(X, jnp.ones((6, 5)), W1, 0.5), ValueError, r"^alibi_attention.*argument 'Z' has 6 rows, expected 8"),
    ("alibi_attention W_q width", lambda: alibi.alibi_attention(X, X, W1._replace(W_q=W1.W_q[:, :7]), 0.5), ValueError, r"^alibi_attention.*argument 'W.W_q' has shape \(4, 7\)"),
    ("gated W_gate rows", lambda: gated_mlp.gated_mlp(**_gm(W_gate=jnp.ones((12, 8)))), ValueError, r"^gated_mlp.*argument 'W_gate' has shape \(12, 8\), expected \(16, 8\)"),
    ("gated W_down rows", lambda: gated_mlp.gated_mlp(**_gm(W_down=jnp.ones((7, 16)))), ValueError, r"^gated_mlp.*argument 'W_down' has shape \(7, 16\), expected \(8, 16\)"),
    ("gated activation string", lambda: gated_mlp.gated_mlp(**_gm(), activation="silu"), TypeError, r"^gated_mlp.*argument 'activation' must be a function"),
    ("favor valid length", lambda: performer.favor_attention(X, X, W1, jnp.ones((6, 4)), valid=jnp.ones(3, bool)), ValueError, r"^FAVOR\+.*argument 'valid' has shape \(3,\), expected \(5,\)"),
    ("classifier valid length", lambda: classification.classifier_logits(jnp.asarray([1, 2, 3, 4]), HEAD, valid=jnp.ones(7, bool)), ValueError, r"^Classification.*argument 'valid' has shape \(7,\), expected \(4,\)"),
    ("linear attention X rows", lambda: linear_attention.causal_linear_attention(jnp.ones((6, 5)), W1), ValueError, r"^causal_linear_attention.*argument 'X' has 6 rows, expected 8"),
    ("linear attention phi string", lambda: linear_attention.fast_weight_attention(X, W1, phi="elu"), TypeError, r"^fast_weight_attention.*argument 'phi' must be a function"),
    ("shared_layers given a tuple", lambda: factorised.shared_layers(E.layers, 2), TypeError, r"^shared_layers.*argument 'layer' must be one layer's parameters.*tuple of 1"),
]  # fmt: skip


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(name, call, error, message):
    with pytest.raises(error) as caught:
        call()
    assert re.search(message, str(caught.value)), str(caught.value)


def test_the_checks_pass_good_input_unchanged():
    """The same functions on good input: the checks let it through (the values are pinned by
    their own tests)."""
    assert bert.bert_encode(jnp.asarray([1, 2, 3]), _bert(), token_type_ids=[0, 1, 1]).shape == (
        8,
        3,
    )
    assert rope.rope_attention(X, X, W1, fa.unidirectional_mask(5)).shape == (8, 5)
    listed = rope.rope_attention(np.asarray(X).tolist(), X, W1)  # a nested list is a matrix
    np.testing.assert_allclose(listed, rope.rope_attention(X, X, W1), rtol=1e-6)
    assert classification.c_loss(HEAD, jnp.asarray([1, 2, 3]), 2).shape == ()
    assert len(factorised.shared_layers(E.layers[0], 3)) == 3
    assert np.isfinite(np.asarray(albert.albert_logits(jnp.asarray([1, 2]), _albert(), L=2))).all()
    # issue 29's held-back catalogue: the same functions on the good neighbours of its cases
    np.testing.assert_array_equal(ga.head_group(4, 2), [0, 0, 1, 1])
    np.testing.assert_allclose(alibi.alibi_slopes(4), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8])
    listed = rope.rope([[1.0, 2.0], [3.0, 4.0]], jnp.arange(2))  # a nested list is a matrix
    np.testing.assert_allclose(listed[:, 0], [1.0, 3.0])  # position 0: no rotation
    assert gated_mlp.gated_mlp(**_gm()).shape == (8, 5)
    valid = jnp.asarray([True, True, True, False])
    assert classification.classifier_logits(jnp.asarray([1, 2, 3, 4]), HEAD, valid=valid).shape == (
        3,
    )
