"""The ALBERT family (Lan et al. 2020) on real weights: rxnmapper's masked language model of
chemical reactions (Schwaller et al. 2021), as Algorithm 9 with two substitutions.

Algorithm 9, line by line, and what ALBERT puts there (docs/variants.md has the table):

- lines 1-3: factorised embeddings (:mod:`..variants.factorised`): ``W_e`` ``(d_emb, N_V)`` and
  ``W_p`` ``(d_emb, ℓ_max)`` in a small width (128), BERT's extras there (token type, LayerNorm),
  then ``X ← W_proj X + b_proj 1ᵀ`` to the layers' width d_e (256);
- line 4's loop: cross-layer sharing, every l uses one :class:`~formal_algorithms.Layer`
  (``L`` = 12 is a hyperparameter, not 12 parameter sets);
- lines 5-8: the paper's Post-LN layer, unchanged (GELU, ε = 1e-12);
- lines 10-11: unchanged, ``W_f`` ``(d_f, d_e)`` maps back to ``d_f = d_emb`` = 128;
- line 12: ``W_u = W_eᵀ`` (tied, possible because ``d_f = d_emb``) plus an output bias ``b_u``.

The model ships in the rxnmapper wheel (``rxnmapper/models/transformers/albert_heads_8_uspto_all_
1310k/``). Installing rxnmapper is unwanted (its dependencies, and it installs a top-level
``tests`` package), so :func:`load_rxnmapper` reads the three files straight from the downloaded
wheel (a zip), or from a folder holding them. Its tokens are SMILES atoms and bonds
(:func:`smiles_tokens`, the regular expression of Schwaller et al. 2019) looked up in ``vocab.txt``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..paper.checks import fail
from ..paper.functions import gelu
from ..paper.normalisation import layer_norm_columns
from ..paper.parameters import Layer
from ..variants.checks import check_linear
from ..variants.factorised import shared_layers
from ..variants.placement import post_ln_stack
from . import core

ALBERT = "albert_logits (Algorithm 9 with factorised embeddings and one shared layer)"
MODEL_DIR = "rxnmapper/models/transformers/albert_heads_8_uspto_all_1310k/"
RXNMAPPER_ENV = "FORMAL_ALGORITHMS_RXNMAPPER"
SMILES_PATTERN = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>>?|\*|\$|%[0-9]{2}|[0-9])"
)


class AlbertParams(NamedTuple):
    """θ of Algorithm 9 with ALBERT's substitutions (one shared layer; factorised embeddings)."""

    W_e: jax.Array  # (d_emb, N_V)
    W_p: jax.Array  # (d_emb, ℓ_max)
    W_tt: jax.Array  # (d_emb, n_types)
    gamma_emb: jax.Array  # (d_emb,)
    beta_emb: jax.Array  # (d_emb,)
    W_proj: jax.Array  # (d_e, d_emb)
    b_proj: jax.Array  # (d_e,)
    layer: Layer  # the one parameter set of every layer
    W_f: jax.Array  # (d_emb, d_e)
    b_f: jax.Array  # (d_emb,)
    gamma: jax.Array  # (d_emb,)
    beta: jax.Array  # (d_emb,)
    b_u: jax.Array  # (N_V,)


def albert_logits(x, params: AlbertParams, *, L: int, activation=gelu, eps=1e-12):
    """``W_u X + b_u 1ᵀ`` ``(N_V, ℓ)``: Algorithm 9 up to its softmax with ALBERT's substitutions
    (the logits of ``AlbertForMaskedLM``). ``L``: how many times the shared layer runs."""
    if not isinstance(params, AlbertParams):
        fail(ALBERT, "params", f"must be AlbertParams, got {type(params).__name__}", TypeError)
    if not isinstance(L, int) or L < 1:
        fail(ALBERT, "L", f"= {L!r} must be a positive integer")
    x = core.check_sequence(ALBERT, x, params.W_e.shape[1], params.W_p.shape[1])
    core.check_segments(ALBERT, params, x.shape[0], None)
    d_emb, N_V = params.W_e.shape
    d_e = check_linear(ALBERT, "params.W_proj", params.W_proj, params.b_proj, d_emb)
    check_linear(ALBERT, "params.W_f", params.W_f, params.b_f, d_e, d_emb)
    for name, want in (("gamma", (d_emb,)), ("beta", (d_emb,)), ("b_u", (N_V,))):
        if getattr(params, name) is None or getattr(params, name).shape != want:
            fail(
                ALBERT,
                f"params.{name}",
                f"has shape {jnp.shape(getattr(params, name))}, expected {want}",
            )
    E = core.embed_with_segments(
        x, params.W_e, params.W_p, params.W_tt, params.gamma_emb, params.beta_emb, eps
    )  # lines 1-3 in d_emb, BERT extras
    X = params.W_proj @ E + params.b_proj[:, None]  # factorised: project to d_e
    X = post_ln_stack(X, shared_layers(params.layer, L), None, activation, eps)  # lines 4-8, shared
    X = activation(params.W_f @ X + params.b_f[:, None])  # line 10
    X = layer_norm_columns(X, params.gamma, params.beta, eps)  # line 11
    logits = params.W_e.T @ X + params.b_u[:, None]  # line 12 (tied W_u = W_eᵀ), before softmax
    return logits


def rxnmapper_source() -> str:
    """Where the rxnmapper model is: ``$FORMAL_ALGORITHMS_RXNMAPPER`` (a wheel or a folder), else
    the wheel ``rxnmapper-0.4.3-py3-none-any.whl`` in ``~/.cache/formal_algorithms/``."""
    default = os.path.expanduser("~/.cache/formal_algorithms/rxnmapper-0.4.3-py3-none-any.whl")
    return os.environ.get(RXNMAPPER_ENV) or default


class Rxnmapper(NamedTuple):
    params: AlbertParams
    vocab: dict  # token → id
    config: dict


def _read_model_files(source: str) -> tuple[bytes, bytes, bytes]:
    names = ("config.json", "pytorch_model.bin", "vocab.txt")
    if os.path.isdir(source):
        folder = (
            source
            if os.path.isfile(os.path.join(source, names[0]))
            else os.path.join(source, MODEL_DIR)
        )
        out = []
        for n in names:
            with open(os.path.join(folder, n), "rb") as f:
                out.append(f.read())
        return tuple(out)
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"load_rxnmapper: no rxnmapper model at {source!r}; download the wheel with "
            f"pip download --no-deps rxnmapper==0.4.3 -d ~/.cache/formal_algorithms "
            f"(or set {RXNMAPPER_ENV} to a wheel or a folder)"
        )
    try:
        with zipfile.ZipFile(source) as z:
            return tuple(z.read(MODEL_DIR + n) for n in names)
    except (zipfile.BadZipFile, KeyError) as error:  # not a wheel, or not rxnmapper's
        fail(
            "load_rxnmapper", "source", f"= {source!r} is not rxnmapper's wheel or folder ({error})"
        )


@functools.lru_cache(maxsize=1)
def load_rxnmapper(source: str | None = None) -> Rxnmapper:
    """θ, vocabulary and config of rxnmapper's ALBERT (read with torch, weights only)."""
    import torch

    raw_config, raw_weights, raw_vocab = _read_model_files(source or rxnmapper_source())
    config = json.loads(raw_config)
    if config.get("num_hidden_groups", 1) != 1 or config.get("inner_group_num", 1) != 1:
        fail("load_rxnmapper", "source", "holds an ALBERT with more than one shared layer")
    state = torch.load(io.BytesIO(raw_weights), map_location="cpu", weights_only=True)
    sd = core.StateDict(
        {k: v.numpy() for k, v in state.items()}, "load_rxnmapper", argument="source"
    )
    p = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    layer = core.bert_layer(sd, p, config["num_attention_heads"], "albert")
    params = AlbertParams(
        sd("albert.embeddings.word_embeddings.weight").T,
        sd("albert.embeddings.position_embeddings.weight").T,
        sd("albert.embeddings.token_type_embeddings.weight").T,
        *sd.norm("albert.embeddings.LayerNorm"),
        *sd.linear("albert.encoder.embedding_hidden_mapping_in"),
        layer,
        *sd.linear("predictions.dense"),
        *sd.norm("predictions.LayerNorm"),
        sd("predictions.bias"),
    )
    vocab = {tok: i for i, tok in enumerate(raw_vocab.decode().splitlines())}
    return Rxnmapper(params, vocab, config)


def smiles_tokens(smiles: str, caller: str = "smiles_tokens") -> list[str]:
    """A reaction SMILES split into atoms, bonds, ring closures and ``>>`` (every character is
    kept: the pieces join back to the input); ``caller`` names the function in errors."""
    if not isinstance(smiles, str):
        fail(caller, "smiles", f"must be a str, got {type(smiles).__name__}", TypeError)
    tokens = SMILES_PATTERN.findall(smiles)
    if "".join(tokens) != smiles:
        fail(caller, "smiles", f"= {smiles!r} has characters no SMILES token covers")
    return tokens


def encode_smiles(smiles: str, vocab: dict) -> list[int]:
    """``[CLS] tokens… [SEP]`` as ids; a token outside the vocabulary is ``[UNK]``."""
    tokens = smiles_tokens(smiles, "encode_smiles")
    if not isinstance(vocab, dict):
        got = type(vocab).__name__
        fail("encode_smiles", "vocab", f"must be a dict token → id, got {got}", TypeError)
    missing = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in vocab]
    if missing:
        fail(
            "encode_smiles", "vocab", f"lacks the special tokens {missing} (rxnmapper's vocab.txt)"
        )
    ids = [vocab.get(t, vocab["[UNK]"]) for t in tokens]
    return [vocab["[CLS]"], *ids, vocab["[SEP]"]]


_albert_logits_jit = jax.jit(albert_logits, static_argnames=("L", "activation", "eps"))


def albert_mlm(ids, model: Rxnmapper):
    """The logits ``(N_V, ℓ)`` of rxnmapper's ALBERT for the ids (L and ε from its config),
    compiled once per sequence length (the token ids are checked first, eagerly)."""
    c = model.config
    N_V, ell_max = model.params.W_e.shape[1], model.params.W_p.shape[1]
    ids = core.check_sequence(ALBERT, jnp.asarray(ids, jnp.int32), N_V, ell_max)
    return _albert_logits_jit(ids, model.params, L=c["num_hidden_layers"], eps=c["layer_norm_eps"])
