"""Bad input to the families (issue 29, the held-back catalogue's cases): each raises the stated
exception and its message names the function and the argument; none returns a silently wrong
value or a raw ZeroDivisionError, IndexError, KeyError or numpy reshape error."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from formal_algorithms.families import bert, core, gpt_neox, llama, llama_loading

KEY = jax.random.key(0)
SIZES = dict(N_V=11, L=1, G=1, d_e=8, d_mlp=12)
THETA = llama.init_llama(KEY, N_V=11, L=1, H=4, G=2, d_e=8, d_mlp=12)
CONFIG = dict(num_attention_heads=2, hidden_size=8, rms_norm_eps=1e-5, num_hidden_layers=1)


def _state(**changed):
    """A Llama state dict (numpy, Hugging Face names) of N_V 11, d_e 8, H 2, G 1, d_mlp 12, L 1."""
    shapes = {
        "model.embed_tokens.weight": (11, 8),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.k_proj.weight": (4, 8),
        "model.layers.0.self_attn.v_proj.weight": (4, 8),
        "model.layers.0.self_attn.o_proj.weight": (8, 8),
        "model.layers.0.mlp.gate_proj.weight": (12, 8),
        "model.layers.0.mlp.up_proj.weight": (12, 8),
        "model.layers.0.mlp.down_proj.weight": (8, 12),
        "model.layers.0.input_layernorm.weight": (8,),
        "model.layers.0.post_attention_layernorm.weight": (8,),
        "model.norm.weight": (8,),
    }
    return {k: np.ones(changed.get(k, s), np.float32) for k, s in shapes.items()}


def _load(state, **kw):
    shapes = {**dict(n_layers=1, n_heads=2, n_kv_heads=1, config=llama.LlamaConfig()), **kw}
    return llama_loading.llama_from_state_dict(state, **shapes)


def _decoder(**kw):
    return llama.Decoder(THETA, **kw)


def _no_gate():
    return THETA._replace(layers=(THETA.layers[0]._replace(W_gate=None),))


def _minilm(path):
    return bert.load_minilm.__wrapped__(path)  # not through the cache: it keeps the real model


HEADS = core.StateDict({"q.weight": np.ones((6, 4)), "q.bias": np.ones(6)}, "opt_from_state_dict")
UP = "model.layers.0.mlp.up_proj.weight"
SCALED = dict(CONFIG, rope_parameters={"rope_type": "default"}, rope_scaling={"type": "linear"})

CASES = [
    ("init_llama H not dividing d_e", lambda: llama.init_llama(KEY, H=3, **SIZES), ValueError, r"^init_llama: argument 'H' = 3 must divide d_e = 8"),
    ("init_llama H 0", lambda: llama.init_llama(KEY, H=0, **SIZES), ValueError, r"^init_llama: argument 'H' = 0 must be at least 1"),
    ("init_gpt_neox H not dividing d_e", lambda: gpt_neox.init_gpt_neox(KEY, N_V=11, L=1, H=3, d_e=8, d_mlp=12), ValueError, r"^init_gpt_neox: argument 'H' = 3 must divide d_e = 8"),
    ("Decoder max_new -1", lambda: _decoder(context=16).generate([1, 2], max_new=-1), ValueError, r"^Decoder.*argument 'max_new' = -1 must be at least 0"),
    ("Decoder context 0", lambda: _decoder(context=0), ValueError, r"^Decoder.*argument 'context' = 0 must be at least 1"),
    ("Decoder init_cache 0", lambda: _decoder().init_cache(0), ValueError, r"^Decoder.*argument 'T' = 0 must be at least 1"),
    ("init_llama_cache T 0", lambda: llama.init_llama_cache(THETA, 0), ValueError, r"^init_llama_cache: argument 'T' = 0 must be at least 1"),
    ("llama_from_state_dict up_proj shape", lambda: _load(_state(**{UP: (5, 8)})), ValueError, r"^llama_from_state_dict: argument 'state' tensor 'model.layers.0.mlp.up_proj.weight' has shape \(5, 8\), expected \(12, 8\)"),
    ("llama_from_state_dict n_kv_heads 3", lambda: _load(_state(), n_heads=4, n_kv_heads=3), ValueError, r"^llama_from_state_dict: argument 'n_kv_heads' = 3 must divide n_heads = 4"),
    ("StateDict.heads rows not H heads", lambda: HEADS.heads("q", 4), ValueError, r"^opt_from_state_dict: argument 'state' tensors 'q' have shapes \(6, 4\) and \(6,\): not 4 heads"),
    ("llama_config empty", lambda: llama_loading.llama_config({}), ValueError, r"^llama_config: argument 'config' lacks num_attention_heads, hidden_size"),
    ("llama_config rope_scaling linear", lambda: llama_loading.llama_config(SCALED), ValueError, r"^llama_config: argument 'config' asks for RoPE scaling 'linear'"),
    ("llama_logits W_gate None", lambda: llama.llama_logits(jnp.asarray([1, 2]), _no_gate()), ValueError, r"^llama_logits.*argument 'theta.layers\[0\].W_gate' is None"),
    ("mean_pool 1-D", lambda: bert.mean_pool(jnp.ones(5)), ValueError, r"^mean_pool: argument 'X' has shape \(5,\), expected \(d, ℓ\)"),
    ("load_minilm missing file", lambda: _minilm("/nonexistent/model.zip"), FileNotFoundError, r"^load_minilm: argument 'path' '/nonexistent/model.zip' is not a file"),
    ("load_minilm not a zip", lambda: _minilm(__file__), ValueError, r"^load_minilm: argument 'path' .*test_family_errors.py' is not a zip file"),
    ("sentence_embedding int", lambda: bert.sentence_embedding(123, None), TypeError, r"^sentence_embedding: argument 'text' must be a str, got int"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name(call, error, pattern):
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error
    assert re.search(pattern, str(raised.value)), str(raised.value)


def test_well_formed_state_dict_loads():
    """The shape checks refuse nothing a well-formed state dict holds."""
    theta = _load(_state())
    assert np.shape(theta.layers[0].W.W_k) == (1, 4, 8) and theta.W_u is None
