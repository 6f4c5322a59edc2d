"""Algorithm 9 (ETransformer) and real BERT: a BERT variant from the same primitives, and exact
conversion to and from Hugging Face ``BertForMaskedLM``.

Real BERT is Algorithm 9 plus three extras, and one coincidence:

- a LayerNorm on the embeddings, before layer 1 (``γ_emb, β_emb``);
- token-type (segment) embeddings ``W_tt`` ``(d_e, n_types)``: column ``W_tt[:, s[t]]`` is added to
  the embedding of token t (with all segment ids 0 that is one constant column);
- a bias ``b_u`` ``(N_V,)`` on the output logits;
- its MLM head ``dense(d_e → d_e) → activation → LayerNorm`` *is* lines 10-11 of Algorithm 9
  (``W_f, b_f, γ, β`` with ``d_f = d_e``), and its decoder is ``W_u``, tied to ``W_e`` by default.

:class:`BertParams` holds an ``ETransformerParams`` θ plus the extras; :func:`bert_logits` computes
BERT from the primitives of Algorithm 9, and with the extras set to ``None`` it is exactly
:func:`~formal_algorithms.e_transformer_logits`. HF stores ``nn.Linear`` weights as
``(d_out, d_in)``, the paper's W as it is; query/key/value are separate linears whose output rows are the heads in
order; embeddings are token-major (``W_e = word_embeddings.weightᵀ``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import torch
from transformers import BertConfig, BertForMaskedLM

from ..paper.architectures import post_ln_layer, unembedding_matrix
from ..paper.attention import MHAttentionParams
from ..paper.checks import check_shape, check_tokens, fail
from ..paper.embeddings import embed
from ..paper.functions import gelu
from ..paper.normalisation import layer_norm_columns
from ..paper.parameters import ETransformerParams, Layer
from ..paper.validation import check_params, hyperparameters
from .torch_transformer import (
    activation_from_hf,
    activation_to_hf,
    check_head_dims,
    check_layer_norm,
    check_no_dropout,
    linear_params,
    norm_params,
    set_linear,
    set_norm,
    to_jax,
    to_torch,
    torch_dtype_of,
)

BERT_EPS = 1e-12  # BertConfig.layer_norm_eps default
_ALG = "bert_logits (Algorithm 9 + BERT extras)"


class BertParams(NamedTuple):
    """θ of Algorithm 9 plus BERT's extras; an extra set to ``None`` is absent."""

    theta: ETransformerParams
    W_tt: jax.Array | None  # (d_e, n_types) token-type embeddings
    gamma_emb: jax.Array | None  # (d_e,) embedding LayerNorm, before layer 1
    beta_emb: jax.Array | None  # (d_e,)
    b_u: jax.Array | None  # (N_V,) output bias on the logits


def bert_from_e_transformer(theta: ETransformerParams) -> BertParams:
    """BERT with every extra absent: :func:`bert_logits` then equals Algorithm 9."""
    return BertParams(theta, None, None, None, None)


def bert_logits(x, params: BertParams, token_type_ids=None, *, activation=gelu, eps=BERT_EPS):
    """Algorithm 9 up to its softmax, with BERT's extras: the logits of ``BertForMaskedLM``.

    ``x``: ``(ℓ,)`` token ids; ``token_type_ids``: ``(ℓ,)`` segment ids (default all 0; only with
    ``W_tt``). Returns ``(N_V, ℓ)``. ``eps`` defaults to BERT's 1e-12 (Algorithm 9's functions
    default to 1e-5). Lines as in Algorithm 9; the extras are marked "BERT".
    """
    _check_bert_params(_ALG, params)
    theta = params.theta
    check_tokens(_ALG, "x", x, theta.W_e.shape[1], theta.W_p.shape[1])
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    if params.W_tt is not None:  # BERT: + W_tt[:, s[t]] for every position t
        if token_type_ids is None:
            token_type_ids = jnp.zeros(x.shape[0], jnp.int32)
        check_tokens(_ALG, "token_type_ids", token_type_ids, params.W_tt.shape[1])
        check_shape(_ALG, "token_type_ids", token_type_ids, x.shape)
        X = X + params.W_tt[:, token_type_ids]
    elif token_type_ids is not None:
        fail(_ALG, "token_type_ids", "was given but params.W_tt is None")
    if params.gamma_emb is not None:  # BERT: LayerNorm of the embeddings
        X = layer_norm_columns(X, params.gamma_emb, params.beta_emb, eps)
    for layer in theta.layers:  # line 4
        X = post_ln_layer(X, layer, None, activation, eps)  # lines 5-8, Mask ≡ 1
    X = activation(theta.W_f @ X + theta.b_f[:, None])  # line 10
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 11
    logits = unembedding_matrix(theta) @ X  # line 12 (part: logits): before the softmax
    if params.b_u is not None:  # BERT: output bias
        logits = logits + params.b_u[:, None]
    return logits


def _check_bert_params(name, params):
    if not isinstance(params, BertParams):
        fail(name, "params", f"must be BertParams, got {type(params).__name__}", TypeError)
    theta = params.theta
    check_params(theta, name)
    d_e, N_V = theta.W_e.shape
    if params.W_tt is not None:
        check_shape(name, "params.W_tt", params.W_tt, (d_e, None))
    if (params.gamma_emb is None) != (params.beta_emb is None):
        fail(name, "params.gamma_emb", "and params.beta_emb must both be arrays or both None")
    if params.gamma_emb is not None:
        check_shape(name, "params.gamma_emb", params.gamma_emb, (d_e,))
        check_shape(name, "params.beta_emb", params.beta_emb, (d_e,))
    if params.b_u is not None:
        check_shape(name, "params.b_u", params.b_u, (N_V,))


def bert_kwargs_from_hf(model_or_config) -> dict:
    """``{"activation": …, "eps": …}`` for :func:`bert_logits` from a BERT model or config."""
    config = getattr(model_or_config, "config", model_or_config)
    name = "bert_kwargs_from_hf"
    activation = activation_from_hf(name, "config.hidden_act", config.hidden_act)
    return {"activation": activation, "eps": config.layer_norm_eps}


# ------------------------------------------------------------------------------- HF -> ours


def bert_from_hf(model: BertForMaskedLM) -> BertParams:
    """:class:`BertParams` from a ``BertForMaskedLM``; dtypes kept, nothing downloaded.

    ``embeddings``: ``word``ᵀ → ``W_e``, ``position``ᵀ → ``W_p``, ``token_type``ᵀ → ``W_tt``,
    ``LayerNorm`` → ``γ_emb, β_emb``. Layer l: ``attention.self.{query,key,value}`` → ``W_l``
    (rows split into heads), ``attention.output.dense`` → ``W_o, b_o`` (line 5),
    ``attention.output.LayerNorm`` → ``γ_l^1, β_l^1`` (line 6),
    ``intermediate.dense``/``output.dense`` → ``W_mlp1^l``/``W_mlp2^l`` (line 7), ``output.LayerNorm`` → ``γ_l^2, β_l^2`` (line 8).
    Head: ``cls.predictions.transform.dense`` → ``W_f, b_f`` (line 10), ``transform.LayerNorm`` →
    ``γ, β`` (line 11), ``decoder.weight`` → ``W_u`` (``None`` when it is the word embedding, i.e.
    tied), ``decoder.bias`` → ``b_u``. Use with ``bert_logits(x, p, **bert_kwargs_from_hf(model))``.

    Raises ``ValueError`` for what cannot be expressed: ``is_decoder`` (causal),
    ``add_cross_attention``, relative position embeddings (transformers 4.x), an activation that is
    not exactly gelu/gelu_tanh/relu, dropout in training mode.
    """
    name = "bert_from_hf"
    if not isinstance(model, BertForMaskedLM):
        fail(name, "model", f"must be a BertForMaskedLM, got {type(model).__name__}", TypeError)
    _check_bert_config(name, model)
    check_no_dropout(name, model)
    eps = model.config.layer_norm_eps
    emb = model.bert.embeddings
    layers = [_layer_from_hf(name, i, m, eps) for i, m in enumerate(model.bert.encoder.layer)]
    head = model.cls.predictions
    check_layer_norm(name, "model.bert.embeddings.LayerNorm", emb.LayerNorm, eps)
    check_layer_norm(
        name, "model.cls.predictions.transform.LayerNorm", head.transform.LayerNorm, eps
    )
    W_u, b_u = linear_params(head.decoder)
    tied = head.decoder.weight is emb.word_embeddings.weight
    theta = ETransformerParams(
        to_jax(emb.word_embeddings.weight).T,
        to_jax(emb.position_embeddings.weight).T,
        tuple(layers),
        *linear_params(head.transform.dense),
        *norm_params(head.transform.LayerNorm),
        None if tied else W_u,
    )
    params = BertParams(
        theta, to_jax(emb.token_type_embeddings.weight).T, *norm_params(emb.LayerNorm), b_u
    )
    _check_bert_params(name, params)
    return params


def _layer_from_hf(name, i, m, eps) -> Layer:
    """Layer l of Algorithm 9 from ``BertLayer`` ``m``: lines 5-8's parameters, heads split."""
    where = f"model.bert.encoder.layer[{i}]"
    check_layer_norm(name, f"{where}.attention.output.LayerNorm", m.attention.output.LayerNorm, eps)
    check_layer_norm(name, f"{where}.output.LayerNorm", m.output.LayerNorm, eps)
    s = m.attention.self
    H, d_head = s.num_attention_heads, s.attention_head_size
    heads = []
    for lin in (s.query, s.key, s.value):
        W, b = linear_params(lin)  # rows of W are the heads in order: (H·d_head, d_e)
        heads += [W.reshape(H, d_head, W.shape[1]), b.reshape(H, d_head)]
    return Layer(
        MHAttentionParams(*heads, *linear_params(m.attention.output.dense)),
        *norm_params(m.attention.output.LayerNorm),
        *norm_params(m.output.LayerNorm),
        *linear_params(m.intermediate.dense),
        *linear_params(m.output.dense),
    )


def _bert_config(name, hp, activation, eps, n_types, attn_implementation) -> BertConfig:
    """The ``BertConfig`` of θ's sizes, without dropout."""
    return BertConfig(
        vocab_size=hp["N_V"],
        hidden_size=hp["d_e"],
        num_hidden_layers=hp["L"],
        num_attention_heads=hp["H"],
        intermediate_size=hp["d_mlp"],
        hidden_act=activation_to_hf(name, activation),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=hp["ell_max"],
        type_vocab_size=n_types,
        layer_norm_eps=eps,
        tie_word_embeddings=hp["tied"],
        attn_implementation=attn_implementation,
    )


def _layer_to_hf(m, layer, d_e) -> None:
    """Layer l's parameters into ``BertLayer`` ``m`` (the inverse of :func:`_layer_from_hf`)."""
    W, s = layer.W, m.attention.self
    for lin, W_x, b_x in ((s.query, W.W_q, W.b_q), (s.key, W.W_k, W.b_k), (s.value, W.W_v, W.b_v)):
        set_linear(lin, W_x.reshape(d_e, d_e), b_x.reshape(d_e))
    set_linear(m.attention.output.dense, W.W_o, W.b_o)
    set_norm(m.attention.output.LayerNorm, layer.gamma1, layer.beta1)
    set_linear(m.intermediate.dense, layer.W_mlp1, layer.b_mlp1)
    set_linear(m.output.dense, layer.W_mlp2, layer.b_mlp2)
    set_norm(m.output.LayerNorm, layer.gamma2, layer.beta2)


def _check_bert_config(name, model):
    config = model.config
    activation_from_hf(name, "model.config.hidden_act", config.hidden_act)
    if config.add_cross_attention:
        fail(
            name, "model.config.add_cross_attention", "is True; Algorithm 9 has no cross-attention"
        )
    if config.is_decoder:
        fail(name, "model.config.is_decoder", "is True (causal mask); Algorithm 9 is bidirectional")
    for i, m in enumerate(model.bert.encoder.layer):
        # transformers 4.x: position_embedding_type="relative_key[_query]" adds this module.
        if hasattr(m.attention.self, "distance_embedding"):
            fail(
                name,
                f"model.bert.encoder.layer[{i}].attention.self",
                "uses relative position embeddings; Algorithm 9 has absolute ones (W_p) only",
            )


# ------------------------------------------------------------------------------- ours -> HF


def bert_to_hf(
    params: BertParams,
    *,
    activation=gelu,
    eps: float = BERT_EPS,
    attn_implementation: str = "eager",
) -> BertForMaskedLM:
    """A ``BertForMaskedLM`` (eval mode, θ's dtype) computing ``bert_logits(x, params, …)``.

    Needs the embedding LayerNorm (HF always applies it) and ``d_f = d_e``, ``d_attn = d_mid =
    d_e / H``. ``W_tt = None`` becomes one all-zero token type, ``b_u = None`` a zero bias.
    ``tie_word_embeddings = (θ.W_u is None)``; all dropouts 0; ``layer_norm_eps = eps``;
    ``hidden_act`` from ``activation`` (``gelu`` → ``"gelu"``, exact erf, BERT's own). In the
    untied model HF keeps ``cls.predictions.bias`` apart from the ``decoder.bias`` it uses; both
    get ``b_u``.
    The global torch RNG is left untouched.
    """
    name = "bert_to_hf"
    _check_bert_params(name, params)
    theta = params.theta
    hp = hyperparameters(theta)
    check_head_dims(name, hp)
    if hp["d_f"] != hp["d_e"]:
        fail(name, "params.theta.W_f", f"maps to d_f = {hp['d_f']}; BERT's head needs d_f = d_e")
    if params.gamma_emb is None:
        fail(name, "params.gamma_emb", "is None, but BERT always normalises its embeddings")
    N_V, d_e = hp["N_V"], hp["d_e"]
    dtype = theta.W_e.dtype
    W_tt = jnp.zeros((d_e, 1), dtype) if params.W_tt is None else params.W_tt
    b_u = jnp.zeros(N_V, dtype) if params.b_u is None else params.b_u
    torch_dtype = torch_dtype_of(
        name, BertParams(theta, W_tt, params.gamma_emb, params.beta_emb, b_u)
    )
    config = _bert_config(name, hp, activation, eps, W_tt.shape[1], attn_implementation)
    with torch.random.fork_rng(devices=[]):  # HF's random init must not move the caller's RNG
        model = BertForMaskedLM(config).to(torch_dtype)
    emb = model.bert.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(to_torch(theta.W_e.T))
        emb.position_embeddings.weight.copy_(to_torch(theta.W_p.T))
        emb.token_type_embeddings.weight.copy_(to_torch(W_tt.T))
        set_norm(emb.LayerNorm, params.gamma_emb, params.beta_emb)
        for m, layer in zip(model.bert.encoder.layer, theta.layers, strict=True):
            _layer_to_hf(m, layer, d_e)
        head = model.cls.predictions
        set_linear(head.transform.dense, theta.W_f, theta.b_f)
        set_norm(head.transform.LayerNorm, theta.gamma, theta.beta)
        if theta.W_u is not None:
            head.decoder.weight.copy_(to_torch(theta.W_u))
        head.decoder.bias.copy_(to_torch(b_u))
        head.bias.copy_(to_torch(b_u))  # the same Parameter when tied; HF's spare copy if not
    return model.eval()
