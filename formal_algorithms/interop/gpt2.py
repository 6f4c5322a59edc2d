"""Algorithm 10 (DTransformer) ⇄ Hugging Face ``GPT2LMHeadModel``: exact conversion both ways.

GPT-2 is Algorithm 10 line for line (Pre-LN layers, causal self-attention, final LayerNorm,
learned absolute positions ``0 … ℓ−1``, unembedding tied to ``W_e`` by default). What differs is
storage and two hyperparameters:

- ``Conv1D`` weights are ``(d_in, d_out)`` (``y = x W + b``): the paper's W is their transpose.
  ``c_attn`` packs ``[q | k | v]`` along the output axis; head h is output columns
  ``h·d_head : (h+1)·d_head`` of each block; ``c_proj`` reads the heads concatenated head-major,
  which is line 3 of Algorithm 5. ``wte``/``wpe``/``lm_head`` are token-major: ``W_e = wteᵀ``,
  ``W_p = wpeᵀ``, ``W_u = lm_head.weight``.
- The activation: GPT-2's default ``"gelu_new"`` is the tanh approximation
  (:func:`~formal_algorithms.gelu_tanh`), not the paper's exact GELU (``"gelu"``).
- ε = ``config.layer_norm_epsilon`` (1e-5 by default, the package's default too).

Neither is in θ: :func:`d_transformer_kwargs_from_gpt2` returns them for
``d_transformer(x, θ, **kwargs)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ..paper.attention import MHAttentionParams
from ..paper.checks import fail
from ..paper.functions import gelu
from ..paper.normalisation import EPS
from ..paper.parameters import DTransformerParams, Layer
from ..paper.validation import check_params, hyperparameters
from .torch_transformer import (
    activation_from_hf,
    activation_to_hf,
    check_head_dims,
    check_layer_norm,
    check_no_dropout,
    norm_params,
    set_norm,
    to_jax,
    to_torch,
    torch_dtype_of,
)

__all__ = ["d_transformer_from_gpt2", "d_transformer_to_gpt2", "d_transformer_kwargs_from_gpt2"]


def d_transformer_kwargs_from_gpt2(model_or_config) -> dict:
    """``{"activation": …, "eps": …}`` for :func:`~formal_algorithms.d_transformer` from a GPT-2
    model or config: ``"gelu_new"``/``"gelu_pytorch_tanh"`` → ``gelu_tanh``, ``"gelu"`` → ``gelu``,
    ``"relu"`` → ``relu``; ``eps = layer_norm_epsilon``."""
    config = getattr(model_or_config, "config", model_or_config)
    name = "d_transformer_kwargs_from_gpt2"
    activation = activation_from_hf(name, "config.activation_function", config.activation_function)
    return {"activation": activation, "eps": config.layer_norm_epsilon}


# ------------------------------------------------------------------------------- HF -> ours


def d_transformer_from_gpt2(model: GPT2LMHeadModel) -> DTransformerParams:
    """θ of Algorithm 10 from a ``GPT2LMHeadModel``; dtypes kept, nothing downloaded.

    ``wte``ᵀ → ``W_e``; ``wpe``ᵀ → ``W_p``; block l: ``ln_1`` → ``γ_l^1, β_l^1`` (line 5),
    ``attn`` → ``W_l`` (line 6), ``ln_2`` → ``γ_l^2, β_l^2`` (line 7), ``mlp.c_fc``/``mlp.c_proj`` →
    ``W_mlp1^l``/``W_mlp2^l`` (line 8); ``ln_f`` → ``γ, β`` (line 10); ``lm_head`` → ``W_u``
    (line 11), or ``W_u = None`` when ``lm_head.weight`` is ``wte.weight`` (tied).
    Use it with ``d_transformer(x, θ, **d_transformer_kwargs_from_gpt2(model))``.

    Raises ``ValueError`` for what Algorithm 10 cannot express: ``add_cross_attention``,
    ``scale_attn_weights=False``, ``scale_attn_by_inverse_layer_idx``, an activation that is not
    exactly gelu/gelu_tanh/relu, dropout in training mode, a biased ``lm_head``.
    ``reorder_and_upcast_attn`` is accepted: it only changes the float16 rounding of line 4.
    """
    name = "d_transformer_from_gpt2"
    if not isinstance(model, GPT2LMHeadModel):
        fail(name, "model", f"must be a GPT2LMHeadModel, got {type(model).__name__}", TypeError)
    config = model.config
    _check_gpt2_config(name, config)
    check_no_dropout(name, model)
    gpt = model.transformer
    eps = config.layer_norm_epsilon
    layers = []
    for i, block in enumerate(gpt.h):
        where = f"model.transformer.h[{i}]"
        check_layer_norm(name, f"{where}.ln_1", block.ln_1, eps)
        check_layer_norm(name, f"{where}.ln_2", block.ln_2, eps)
        H, d_e = block.attn.num_heads, block.attn.embed_dim
        W = _conv1d(block.attn.c_attn)[0].reshape(3, H, d_e // H, d_e)  # [W_q; W_k; W_v]
        b = to_jax(block.attn.c_attn.bias).reshape(3, H, d_e // H)
        attn = MHAttentionParams(W[0], b[0], W[1], b[1], W[2], b[2], *_conv1d(block.attn.c_proj))
        layers.append(
            Layer(
                attn,
                *norm_params(block.ln_1),
                *norm_params(block.ln_2),
                *_conv1d(block.mlp.c_fc),
                *_conv1d(block.mlp.c_proj),
            )
        )
    check_layer_norm(name, "model.transformer.ln_f", gpt.ln_f, eps)
    if model.lm_head.bias is not None:
        fail(name, "model.lm_head", "has a bias; line 11 of Algorithm 10 has none")
    tied = model.lm_head.weight is gpt.wte.weight
    theta = DTransformerParams(
        to_jax(gpt.wte.weight).T,
        to_jax(gpt.wpe.weight).T,
        tuple(layers),
        *norm_params(gpt.ln_f),
        None if tied else to_jax(model.lm_head.weight),
    )
    check_params(theta, name)
    return theta


def _conv1d(m):
    """``(W, b)`` in the paper's orientation from a GPT-2 ``Conv1D`` (``weight``: ``(in, out)``)."""
    return to_jax(m.weight).T, to_jax(m.bias)


def _check_gpt2_config(name, config):
    activation_from_hf(name, "model.config.activation_function", config.activation_function)
    if config.add_cross_attention:
        fail(
            name, "model.config.add_cross_attention", "is True; Algorithm 10 has no cross-attention"
        )
    if not config.scale_attn_weights:
        fail(name, "model.config.scale_attn_weights", "is False; Algorithm 4 divides by √d_attn")
    if config.scale_attn_by_inverse_layer_idx:
        fail(
            name,
            "model.config.scale_attn_by_inverse_layer_idx",
            "is True (scores of layer l divided by l); Algorithm 4 only divides by √d_attn",
        )


# ------------------------------------------------------------------------------- ours -> HF


def d_transformer_to_gpt2(
    theta: DTransformerParams,
    *,
    activation=gelu,
    eps: float = EPS,
    attn_implementation: str = "eager",
) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` (eval mode, θ's dtype) computing Algorithm 10 for θ, that is
    ``d_transformer(x, θ, activation=activation, eps=eps)``.

    ``activation``: :func:`~formal_algorithms.gelu` (default, the paper's) → ``"gelu"``,
    :func:`~formal_algorithms.gelu_tanh` → ``"gelu_new"`` (GPT-2's), ``relu`` → ``"relu"``.
    All dropouts are 0; ``tie_word_embeddings = (θ.W_u is None)``; ``n_positions = ℓ_max``;
    ``n_inner = d_mlp``; ``bos_token_id``/``eos_token_id`` are the package's special tokens
    ``N_V − 2``/``N_V − 1``.
    Needs ``d_attn = d_mid = d_e / H``. The global torch RNG is left untouched.
    """
    name = "d_transformer_to_gpt2"
    check_params(theta, name)
    hp = hyperparameters(theta)
    check_head_dims(name, hp)
    dtype = torch_dtype_of(name, theta)
    N_V, d_e, H = hp["N_V"], hp["d_e"], hp["H"]
    config = GPT2Config(
        vocab_size=N_V,
        n_positions=hp["ell_max"],
        n_embd=d_e,
        n_layer=hp["L"],
        n_head=H,
        n_inner=hp["d_mlp"],
        activation_function=activation_to_hf(name, activation),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=eps,
        tie_word_embeddings=hp["tied"],
        bos_token_id=N_V - 2 if N_V >= 3 else None,
        eos_token_id=N_V - 1 if N_V >= 3 else None,
        attn_implementation=attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):  # HF's random init must not move the caller's RNG
        model = GPT2LMHeadModel(config).to(dtype)
    gpt = model.transformer
    with torch.no_grad():
        gpt.wte.weight.copy_(to_torch(theta.W_e.T))
        gpt.wpe.weight.copy_(to_torch(theta.W_p.T))
        for block, layer in zip(gpt.h, theta.layers, strict=True):
            W = layer.W
            set_norm(block.ln_1, layer.gamma1, layer.beta1)
            W_qkv = jnp.concatenate([w.reshape(d_e, d_e) for w in (W.W_q, W.W_k, W.W_v)])
            _set_conv1d(block.attn.c_attn, W_qkv, jnp.concatenate([W.b_q, W.b_k, W.b_v], axis=None))
            _set_conv1d(block.attn.c_proj, W.W_o, W.b_o)
            set_norm(block.ln_2, layer.gamma2, layer.beta2)
            _set_conv1d(block.mlp.c_fc, layer.W_mlp1, layer.b_mlp1)
            _set_conv1d(block.mlp.c_proj, layer.W_mlp2, layer.b_mlp2)
        set_norm(gpt.ln_f, theta.gamma, theta.beta)
        if theta.W_u is not None:
            model.lm_head.weight.copy_(to_torch(theta.W_u))
    return model.eval()


def _set_conv1d(m, W, b):
    m.weight.copy_(to_torch(W.T))
    m.bias.copy_(to_torch(b))
