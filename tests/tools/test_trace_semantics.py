"""Every record holds what its line names (issue 25): the table of each pseudocode line's value
(``paper.pseudocode.VALUES`` and ``PARTS``) checked against traces of all 15 algorithms, the fast
forms, the variants and the Llama family; and the checker itself fails on the mislabels it exists
to catch. The ``# line`` tags of the whole package are checked too (issue 26)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa
from formal_algorithms.families import gpt_neox, llama, mistral, opt, qwen2
from formal_algorithms.paper import pseudocode
from formal_algorithms.practice import fast
from formal_algorithms.trace import trace
from formal_algorithms.trace.index import tag_problems
from formal_algorithms.trace.recorder import Record
from formal_algorithms.trace.semantics import problems
from formal_algorithms.variants import (
    alibi,
    gopher,
    partial_rope,
    performer,
    placement,
    resi_dual,
    rope,
)
from formal_algorithms.variants import grouped_attention as ga
from formal_algorithms.variants import linear_attention as la

HP = dict(N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
KEY = jax.random.key(3)
x = jnp.asarray([1, 2, 3])


def _runs():
    d = fa.init_d_transformer(jax.random.key(0), **HP)
    e = fa.init_e_transformer(jax.random.key(1), **HP)
    ed = fa.init_ed_transformer(jax.random.key(2), N_V=11, ell_max=8, L_enc=1, L_dec=1, H=2, d_e=8, d_mlp=8)  # fmt: skip
    W1 = fa.init_attention(KEY, d_x=8, d_z=8, d_attn=4, d_out=8)
    W2 = fa.init_mh_attention(KEY, 2, 8, 8, 4, 4, 8)
    Wg = fa.init_mh_attention(KEY, 4, 8, 8, 2, 2, 8)
    Wg = Wg._replace(W_k=Wg.W_k[:2], b_k=Wg.b_k[:2], W_v=Wg.W_v[:2], b_v=Wg.b_v[:2])
    X, Z, M = (
        jax.random.normal(KEY, (8, 5)),
        jax.random.normal(KEY, (8, 3)),
        fa.unidirectional_mask(5),
    )
    lt = llama.init_llama(KEY, N_V=11, L=2, H=4, G=2, d_e=8, d_mlp=12, dtype=jnp.float64)
    xs = jnp.asarray([[1, 2, 3], [4, 5, 6]])
    nt = gpt_neox.init_gpt_neox(KEY, N_V=11, L=2, H=2, d_e=8, d_mlp=12, dtype=jnp.float64)
    return {
        "Algorithm 1": (fa.token_embedding, 2, d.W_e),
        "Algorithm 2": (fa.positional_embedding, 1, d.W_p),
        "Algorithm 3": (fa.single_query_attention, jnp.ones(8), jnp.ones((8, 3)), W1),
        "Algorithm 4, cross": (fa.attention, X, Z, W1, jnp.ones((3, 5), bool)),
        "Algorithm 5": (fa.mh_attention, X, X, W2, M),
        "Algorithm 6": (fa.layer_norm, jnp.arange(8.0), jnp.ones(8), jnp.zeros(8)),
        "Algorithm 7": (fa.unembedding, jnp.ones(8), d.W_e.T),
        "Algorithm 8": (fa.ed_transformer, x, jnp.asarray([4, 5]), ed),
        "Algorithm 9": (fa.e_transformer, x, e),
        "Algorithm 10": (fa.d_transformer, x, d),
        "Algorithm 11": (
            fa.ed_training,
            [(x, jnp.asarray([9, 1, 10]))],
            ed,
            dict(N_epochs=1, eta=0.1),
        ),  # fmt: skip
        "Algorithm 12": (
            fa.e_training,
            [jnp.asarray([1, 2, 3, 4, 5, 6])],
            e,
            KEY,
            dict(N_epochs=1, eta=0.1, p_mask=0.5),
        ),  # fmt: skip
        "Algorithm 13": (fa.d_training, [x], d, dict(N_epochs=1, eta=0.1)),
        "Algorithm 14": (fa.d_inference, x, d, KEY, dict(ell_gen=2, tau=0.8)),
        "Algorithm 15": (fa.ed_inference, x, ed, KEY, dict(max_length=3)),
        "losses 11-13": (
            lambda: (
                fa.d_loss(d, x),
                fa.e_loss(e, jnp.asarray([1, 8, 3]), x),
                fa.ed_loss(ed, x, x),
            ),
        ),  # fmt: skip
        "rope": (rope.rope_attention, X, X, W1, M),
        "grouped + rope": (ga.grouped_attention, X, X, Wg, M, dict(rope_base=1e4)),
        "alibi": (alibi.alibi_mh_attention, X, X, W2, M),
        "gopher": (gopher.gopher_d_transformer, x, gopher.init_gopher_d_transformer(KEY, **HP)),
        "pre-LN Algorithm 9": (
            placement.pre_ln_e_transformer,
            x,
            placement.init_pre_ln_e_transformer(KEY, **HP),
        ),  # fmt: skip
        "post-LN Algorithm 10": (
            placement.post_ln_d_transformer,
            x,
            placement.init_post_ln_d_transformer(KEY, **HP),
        ),  # fmt: skip
        "ResiDual": (resi_dual.resi_dual_d_transformer, x, d),
        "Performer": (
            performer.performer_d_transformer_logits,
            x,
            d,
            performer.draw_features(KEY, 16, 4),
        ),  # fmt: skip
        "linear attention": (la.mh_causal_linear_attention, X, W2),
        "Llama": (llama.llama_logits, x, lt),
        "fast: d scan": (fast.d_transformer_logits_scan, x, d),
        "fast: d batch": (fast.d_transformer_logits_batch, xs, d),
        "fast: e batch": (fast.e_transformer_logits_batch, xs, e),
        "fast: ed batch": (fast.ed_transformer_logits_batch, xs, xs, ed),
        "Qwen2": (
            qwen2.qwen2_logits,
            x,
            qwen2.init_qwen2(KEY, N_V=11, L=2, H=4, G=2, d_e=8, d_mlp=12, dtype=jnp.float64),
        ),  # fmt: skip
        "Mistral": (mistral.mistral_logits, x, lt._replace(config=llama.LlamaConfig(window=2))),
        "GPT-NeoX parallel": (
            gpt_neox.gpt_neox_logits,
            x,
            nt._replace(config=gpt_neox.GPTNeoXConfig(d_rot=2)),
        ),  # fmt: skip
        "GPT-NeoX sequential": (
            gpt_neox.gpt_neox_logits,
            x,
            nt._replace(config=gpt_neox.GPTNeoXConfig(d_rot=2, parallel=False)),
        ),  # fmt: skip
        "OPT Pre-LN": (opt.opt_logits, x, opt.OPTParams(*d)),
        "OPT Post-LN": (
            opt.opt_logits,
            x,
            opt.OPTParams(*d)._replace(gamma=None, beta=None, config=opt.OPTConfig(pre_ln=False)),
        ),  # fmt: skip
        "partial rope": (partial_rope.partial_rope_attention, X, X, W2, M, dict(d_rot=2)),
        "cached Algorithm 14": (fa.d_inference_cached, x, d, KEY, dict(ell_gen=3)),
        "cached Algorithm 15": (fa.ed_inference_cached, x, ed, KEY, dict(max_length=3)),
        "cached Llama": (
            lambda t: llama.llama_cached_logits(x, 0, t, llama.init_llama_cache(t, 8)),
            lt,
        ),  # fmt: skip
        "cached GPT-NeoX parallel": (
            lambda t: gpt_neox.gpt_neox_decoder(t).logits(
                x, 0, gpt_neox.gpt_neox_decoder(t).init_cache(8)
            ),
            nt._replace(config=gpt_neox.GPTNeoXConfig(d_rot=2)),
        ),  # fmt: skip
        "cached OPT Post-LN": (
            lambda t: opt.opt_decoder(t).logits(x, 0, opt.opt_decoder(t).init_cache(8)),
            opt.OPTParams(*d)._replace(gamma=None, beta=None, config=opt.OPTConfig(pre_ln=False)),
        ),  # fmt: skip
        "cached Llama column": (
            lambda t: llama.llama_cached_logits(x[:1], 0, t, llama.init_llama_cache(t, 8)),
            lt,
        ),  # fmt: skip
    }


RUNS = _runs()


@pytest.mark.parametrize("name", list(RUNS))
def test_every_record_is_the_value_its_line_names(name):
    fn, *args = RUNS[name]
    kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
    tr = trace(fn, *args, **kwargs)
    assert len(tr.records) > 0
    assert problems(tr.records) == []


def _record(algorithm, line, value, *, name="X", part=False, path=None, indices=None):
    return Record(
        algorithm, line, (line,), indices or {}, path or f"Algorithm {algorithm} › line {line}",
        value, "", name, "f", "", "f.py:1", part,
    )  # fmt: skip


def test_the_checker_fails_on_each_kind_of_mislabel():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4))
    P = np.exp(logits) / np.exp(logits).sum(axis=0)
    assert problems([_record(10, 11, P)]) == []
    # the logits under P's name: not a distribution
    assert "summing to 1" in problems([_record(10, 11, logits)])[0] or "negative" in problems([_record(10, 11, logits)])[0]  # fmt: skip
    # a part that the table does not declare, and a line the paper does not have
    assert "declares no such" in problems([_record(10, 11, logits, name="scores", part=True)])[0]
    assert "declares no such" in problems([_record(4, 7, P)])[0]
    # S transposed in cross-attention: ℓ_z = 3 keys, ℓ_x = 5 queries
    Q, K = rng.normal(size=(2, 5)), rng.normal(size=(2, 3))
    ok = [_record(4, 1, Q, name="Q"), _record(4, 2, K, name="K"), _record(4, 4, K.T @ Q, name="S")]
    assert problems(ok) == []
    bad = problems(ok[:2] + [_record(4, 4, (K.T @ Q).T, name="S")])
    assert len(bad) == 1 and "ℓ_z = 3" in bad[0]
    # a head axis left in a per-head value
    assert "got (2, 2, 5)" in problems([_record(4, 1, np.stack([Q, Q]), name="Q")])[0]
    # masked scores: −∞ allowed, NaN or +∞ not
    S = K.T @ Q
    assert problems([_record(4, 5, np.where(np.eye(3, 5, dtype=bool), S, -np.inf))]) == []
    assert "NaN" in problems([_record(4, 5, np.where(np.eye(3, 5, dtype=bool), S, np.nan))])[0]
    # a token must be an integer id, a loop index ≥ 1
    assert "dtype float" in problems([_record(14, 5, np.float32(3.0), name="y")])[0]
    assert "< 1" in problems([_record(10, 4, 0, name="l")])[0]
    assert problems([_record(10, 4, 1, name="l")]) == []


def test_the_table_covers_every_line_that_names_a_value():
    """Every pseudocode line is in VALUES unless it only closes a loop (``end``)."""
    for algorithm, lines in pseudocode.PSEUDOCODE.items():
        for line, text in lines.items():
            declared = pseudocode.value(algorithm, line)
            assert (declared is None) == (text == "end"), (algorithm, line, text)
            if declared is not None:
                assert declared.kind in pseudocode.KINDS


def test_every_line_tag_in_the_package_parses_and_names_a_line_of_its_algorithm():
    root = pathlib.Path(fa.__file__).parent
    assert tag_problems(sorted(root.rglob("*.py"))) == []


def test_the_tag_check_fails_on_a_malformed_tag_and_on_a_line_the_paper_lacks(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(X):\n"
        '    """Algorithm 4, one head."""\n'
        "    Q = X  # line 1\n"
        "    S = Q  # 4\n"
        "    T = S  # line 9\n"
        "    return T  # line 6 (part)\n"
    )
    found = tag_problems([bad])
    assert any("'# 4' looks like a tag" in p for p in found), found
    assert any("Algorithm 4 has no line [9]" in p for p in found), found
    assert any("returned part needs a name" in p for p in found), found


def _all_heads(X, W):
    """Algorithm 4 for every head at once (a test of the tags' axis names)."""
    Q = jnp.einsum("had,dt->hat", W.W_q, X) + W.b_q[:, :, None]  # line 1 [h, :, :]
    K = jnp.einsum("had,dt->hat", W.W_k, X) + W.b_k[:, :, None]  # line 2 [h, :, :]
    S = jnp.einsum("hat,has->hts", K, Q)  # line 4 [h, :, :]
    return S


def test_a_tag_naming_the_axes_splits_a_value_per_head():
    W = fa.init_mh_attention(KEY, 3, 8, 8, 4, 4, 8)
    X = jax.random.normal(KEY, (8, 5))
    tr = trace(_all_heads, X, W)
    assert problems(tr.records) == []
    for h in (1, 2, 3):
        Q = np.asarray(W.W_q[h - 1]) @ np.asarray(X) + np.asarray(W.b_q[h - 1])[:, None]
        K = np.asarray(W.W_k[h - 1]) @ np.asarray(X) + np.asarray(W.b_k[h - 1])[:, None]
        np.testing.assert_allclose(tr.get(4, 4, h=h), K.T @ Q, rtol=1e-5, atol=1e-6)
    assert len(tr.find(4, 4)) == 3


def test_the_encoder_families_on_their_trained_weights():
    """BERT (all-MiniLM-L6-v2) and ALBERT (rxnmapper), read from their packages: every record
    of a forward pass is the value its line names."""
    from formal_algorithms.families.albert import albert_mlm, encode_smiles, load_rxnmapper
    from formal_algorithms.families.bert import bert_encode, load_minilm

    tr = trace(bert_encode, np.asarray([101, 2023, 2003, 102]), load_minilm().params)
    assert len(tr.find(4, 5)) == 6 * 12 and problems(tr.records) == []
    rxn = load_rxnmapper()
    tr = trace(albert_mlm, encode_smiles("CCO", rxn.vocab), rxn)
    assert len(tr.find(4, 6, name="A")) > 0 and problems(tr.records) == []
