"""Algorithm 8 (EDTransformer) ⇄ ``torch.nn.Transformer``: exact conversion both ways.

``torch.nn.Transformer`` with ``norm_first=False``, ReLU and no dropout computes lines 4-9 and
13-20 of Algorithm 8, with three differences that the converters make explicit:

- It has no token/positional embedding and no unembedding: lines 1-3, 10-12 and 21 live outside
  it. They are ``W_e``, ``W_p``, ``W_u`` here, passed next to the model
  (:func:`torch_ed_transformer_logits` wraps them around it the same way Algorithm 8 does).
- By default it appends a final LayerNorm after the encoder stack and one after the decoder stack
  (``model.encoder.norm``, ``model.decoder.norm``). Algorithm 8 has neither, so
  :func:`ed_transformer_from_torch` refuses a model that has them (set both to ``None``) and
  :func:`ed_transformer_to_torch` builds the model without them.
- Its weights are stored token-major: ``nn.Linear.weight`` is ``(d_out, d_in)`` and acts on rows,
  ``y = x Wᵀ + b``, which is the paper's ``W X + b 1ᵀ`` on the transposed sequence, so every
  weight matrix carries over as it is. ``nn.MultiheadAttention`` packs ``in_proj_weight`` =
  ``[W_q; W_k; W_v]`` (each ``(d_e, d_e)``), head h being rows ``h·d_head : (h+1)·d_head`` of each.

This module imports torch; the package's ``__init__`` never imports it. The private helpers at the
bottom are shared with :mod:`.gpt2` and :mod:`.bert`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from ..paper.attention import MHAttentionParams
from ..paper.checks import fail
from ..paper.functions import gelu, gelu_tanh, relu
from ..paper.normalisation import EPS
from ..paper.parameters import DecoderLayer, EDTransformerParams, Layer
from ..paper.validation import check_params, hyperparameters

__all__ = [
    "ed_transformer_from_torch",
    "ed_transformer_to_torch",
    "torch_ed_transformer_logits",
]


# ------------------------------------------------------------------------------- torch -> ours


def ed_transformer_from_torch(model: nn.Transformer, W_e, W_p, W_u=None, *, eps: float = EPS):
    """θ of Algorithm 8 from a ``torch.nn.Transformer`` and the embeddings wrapped around it.

    ``W_e`` ``(d_e, N_V)``, ``W_p`` ``(d_e, ℓ_max)``, ``W_u`` ``(N_V, d_e)`` or ``None`` (tied)
    are in the paper's orientation (torch tensors or arrays). Encoder layer l maps to ``θ.enc[l]``
    (``self_attn`` → ``W_l^enc``, ``norm1`` → ``γ_l^1, β_l^1``, ``linear1``/``linear2`` →
    ``W_mlp1^l``/``W_mlp2^l``, ``norm2`` → ``γ_l^2, β_l^2``), decoder layer l to ``θ.dec[l]``
    (``self_attn`` → ``W_l^dec``, ``norm1`` → ``γ_l^3, β_l^3``, ``multihead_attn`` → ``W_l^{e/d}``,
    ``norm2`` → ``γ_l^4, β_l^4``, ``linear1``/``linear2`` → ``W_mlp3^l``/``W_mlp4^l``,
    ``norm3`` → ``γ_l^5, β_l^5``). Dtypes are kept.

    ``eps`` is the ε you will pass to :func:`~formal_algorithms.ed_transformer`; every LayerNorm
    of the model must use it. Raises ``ValueError`` for anything Algorithm 8 cannot express:
    final encoder/decoder norms, ``norm_first=True``, an activation other than ReLU, dropout in
    training mode, ``add_bias_kv``/``add_zero_attn``, separate k/v dims, custom layer classes.
    """
    name = "ed_transformer_from_torch"
    if not isinstance(model, nn.Transformer):
        fail(
            name, "model", f"must be a torch.nn.Transformer, got {type(model).__name__}", TypeError
        )
    check_no_dropout(name, model)
    encoder, decoder = model.encoder, model.decoder
    # Exact types: a subclass may override forward and compute something else.
    if type(encoder) is not nn.TransformerEncoder or type(decoder) is not nn.TransformerDecoder:
        fail(name, "model", "must use nn.TransformerEncoder and nn.TransformerDecoder stacks")
    for stack, attr in ((encoder, "model.encoder.norm"), (decoder, "model.decoder.norm")):
        if stack.norm is not None:
            fail(
                name,
                attr,
                "is a final LayerNorm that Algorithm 8 does not have (lines 9 and 20 end the "
                f"stacks without one); set {attr} = None to convert",
            )
    enc = tuple(
        _encoder_layer(name, f"model.encoder.layers[{i}]", m, eps)
        for i, m in enumerate(encoder.layers)
    )
    dec = tuple(
        _decoder_layer(name, f"model.decoder.layers[{i}]", m, eps)
        for i, m in enumerate(decoder.layers)
    )
    theta = EDTransformerParams(
        to_jax(W_e), to_jax(W_p), enc, dec, None if W_u is None else to_jax(W_u)
    )
    check_params(theta, name)
    return theta


def _encoder_layer(name, where, m, eps) -> Layer:
    if type(m) is not nn.TransformerEncoderLayer:
        fail(name, where, f"must be an nn.TransformerEncoderLayer, got {type(m).__name__}")
    _check_post_ln_relu(name, where, m, (m.norm1, m.norm2), eps)
    return Layer(
        _mha_from_torch(name, f"{where}.self_attn", m.self_attn),
        *norm_params(m.norm1),
        *norm_params(m.norm2),
        *linear_params(m.linear1),
        *linear_params(m.linear2),
    )


def _decoder_layer(name, where, m, eps) -> DecoderLayer:
    if type(m) is not nn.TransformerDecoderLayer:
        fail(name, where, f"must be an nn.TransformerDecoderLayer, got {type(m).__name__}")
    _check_post_ln_relu(name, where, m, (m.norm1, m.norm2, m.norm3), eps)
    return DecoderLayer(
        _mha_from_torch(name, f"{where}.self_attn", m.self_attn),
        _mha_from_torch(name, f"{where}.multihead_attn", m.multihead_attn),
        *norm_params(m.norm1),
        *norm_params(m.norm2),
        *norm_params(m.norm3),
        *linear_params(m.linear1),
        *linear_params(m.linear2),
    )


def _check_post_ln_relu(name, where, m, norms, eps):
    if m.norm_first:
        fail(name, f"{where}.norm_first", "is True (Pre-LN); Algorithm 8 is Post-LN")
    if not (m.activation is torch.nn.functional.relu or isinstance(m.activation, nn.ReLU)):
        fail(name, f"{where}.activation", f"is {m.activation!r}; Algorithm 8 uses ReLU")
    for i, norm in enumerate(norms, 1):
        check_layer_norm(name, f"{where}.norm{i}", norm, eps)


def _mha_from_torch(name, where, mha: nn.MultiheadAttention) -> MHAttentionParams:
    """Eq. 4's ``W`` from an ``nn.MultiheadAttention``: unpack ``[W_q; W_k; W_v]``, split heads."""
    if not mha._qkv_same_embed_dim:
        fail(name, where, "has kdim/vdim != embed_dim (separate q/k/v weights); not supported")
    if mha.bias_k is not None or mha.add_zero_attn:
        fail(name, where, "uses add_bias_kv or add_zero_attn, which Algorithm 5 does not have")
    H, d = mha.num_heads, mha.embed_dim
    W = to_jax(mha.in_proj_weight).reshape(3, H, d // H, d)  # [W_q; W_k; W_v], heads by rows
    b = _bias(mha.in_proj_bias, 3 * d, W.dtype).reshape(3, H, d // H)
    W_o, b_o = linear_params(mha.out_proj)
    return MHAttentionParams(W[0], b[0], W[1], b[1], W[2], b[2], W_o, b_o)


# ------------------------------------------------------------------------------- ours -> torch


def ed_transformer_to_torch(
    theta: EDTransformerParams, *, eps: float = EPS, batch_first: bool = True
) -> nn.Transformer:
    """A ``torch.nn.Transformer`` (eval mode) computing lines 4-9 and 13-20 of Algorithm 8 for θ.

    Built with ``norm_first=False``, ReLU, ``dropout=0``, ``layer_norm_eps=eps`` and no final
    encoder/decoder norm (``model.encoder.norm is model.decoder.norm is None``), in θ's dtype.
    ``W_e``, ``W_p``, ``W_u`` stay in θ: wrap them around the model with
    :func:`torch_ed_transformer_logits`. Needs ``d_attn = d_mid = d_e / H`` (torch's head size),
    ``L_enc, L_dec ≥ 1`` and one dtype for all of θ.
    """
    name = "ed_transformer_to_torch"
    check_params(theta, name)
    hp = hyperparameters(theta)
    d_e, H, d_mlp = hp["d_e"], hp["H"], hp["d_mlp"]
    check_head_dims(name, hp)
    if hp["L_enc"] < 1 or hp["L_dec"] < 1:
        fail(name, "theta", "needs at least one encoder and one decoder layer for nn.Transformer")
    dtype = torch_dtype_of(name, theta)
    common = dict(
        d_model=d_e,
        nhead=H,
        dim_feedforward=d_mlp,
        dropout=0.0,
        activation="relu",
        layer_norm_eps=eps,
        batch_first=batch_first,
        norm_first=False,
        dtype=dtype,
    )
    # Custom stacks so that the final norms are absent (norm=None); enable_nested_tensor=False
    # only disables a padding fast path (and its warning), not any arithmetic. torch's random
    # init is overwritten below and must not move the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**common), hp["L_enc"], norm=None, enable_nested_tensor=False
        )
        decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**common), hp["L_dec"], norm=None
        )
        model = nn.Transformer(
            d_e,
            H,
            hp["L_enc"],
            hp["L_dec"],
            d_mlp,
            dropout=0.0,
            custom_encoder=encoder,
            custom_decoder=decoder,
            layer_norm_eps=eps,
            batch_first=batch_first,
            dtype=dtype,
        )
    with torch.no_grad():
        _layers_to_torch(model, theta)
    return model.eval()


def _layers_to_torch(model: nn.Transformer, theta: EDTransformerParams) -> None:
    """θ's encoder layers (lines 4-9) and decoder layers (lines 13-20) into ``model``'s."""
    for m, layer in zip(model.encoder.layers, theta.enc, strict=True):
        _mha_to_torch(m.self_attn, layer.W)
        set_norm(m.norm1, layer.gamma1, layer.beta1)
        set_linear(m.linear1, layer.W_mlp1, layer.b_mlp1)
        set_linear(m.linear2, layer.W_mlp2, layer.b_mlp2)
        set_norm(m.norm2, layer.gamma2, layer.beta2)
    for m, layer in zip(model.decoder.layers, theta.dec, strict=True):
        _mha_to_torch(m.self_attn, layer.W_dec)
        set_norm(m.norm1, layer.gamma3, layer.beta3)
        _mha_to_torch(m.multihead_attn, layer.W_ed)
        set_norm(m.norm2, layer.gamma4, layer.beta4)
        set_linear(m.linear1, layer.W_mlp3, layer.b_mlp3)
        set_linear(m.linear2, layer.W_mlp4, layer.b_mlp4)
        set_norm(m.norm3, layer.gamma5, layer.beta5)


def _mha_to_torch(mha: nn.MultiheadAttention, W: MHAttentionParams):
    H, d_head, d = W.W_q.shape
    mha.in_proj_weight.copy_(
        to_torch(jnp.concatenate([w.reshape(H * d_head, d) for w in (W.W_q, W.W_k, W.W_v)]))
    )
    mha.in_proj_bias.copy_(to_torch(jnp.concatenate([W.b_q, W.b_k, W.b_v], axis=None)))
    set_linear(mha.out_proj, W.W_o, W.b_o)


# --------------------------------------------------------------------------- reference forward


def torch_ed_transformer_logits(model: nn.Transformer, W_e, W_p, W_u, z, x):
    """Algorithm 8 up to its softmax, computed by torch: the reference for the tests.

    Lines 1-3 and 10-12 (``e_t = W_e[:, x[t]] + W_p[:, t]``) are done here in torch and transposed
    to torch's token-major ``(ℓ, d_e)`` layout; ``model(src, tgt, tgt_mask=causal)`` is lines 4-9
    and 13-20 (the mask is torch's additive ``-inf`` above the diagonal: query t sees keys ``t' ≤ t``,
    eq. 3); line 21 is ``W_u X`` (``W_u=None``: ``W_eᵀ``). Returns a torch tensor ``(N_V, ℓ_x)``.
    Sequences are unbatched 1-D token ids.
    """
    dtype = next(model.parameters()).dtype
    W_e, W_p = _as_torch(W_e, dtype), _as_torch(W_p, dtype)
    W_u = W_e.T if W_u is None else _as_torch(W_u, dtype)
    z, x = torch.as_tensor(np.asarray(z)), torch.as_tensor(np.asarray(x))
    src = (W_e[:, z] + W_p[:, : z.shape[0]]).T  # (ℓ_z, d_e)
    tgt = (W_e[:, x] + W_p[:, : x.shape[0]]).T  # (ℓ_x, d_e)
    causal = nn.Transformer.generate_square_subsequent_mask(x.shape[0], dtype=dtype)
    with torch.no_grad():
        X = model(src, tgt, tgt_mask=causal, tgt_is_causal=True)  # (ℓ_x, d_e)
    return W_u @ X.T


# ------------------------------------------------------------------ helpers (shared with HF code)


def to_jax(t) -> jax.Array:
    """A torch tensor (or array) as a jax array of the same dtype (bfloat16 via float32)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            return jnp.asarray(t.float().numpy(), dtype=jnp.bfloat16)
        return jnp.asarray(t.numpy())
    return jnp.asarray(t)


def to_torch(a) -> torch.Tensor:
    a = jnp.asarray(a)
    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(np.asarray(a, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a))  # a writable copy


def _as_torch(a, dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(dtype)
    return to_torch(a).to(dtype)


def torch_dtype_of(name, theta) -> torch.dtype:
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(theta)}
    if len(dtypes) != 1:
        fail(name, "theta", f"mixes dtypes {sorted(map(str, dtypes))}; use one dtype", TypeError)
    return to_torch(jnp.zeros((), dtypes.pop())).dtype


def _bias(t, n, dtype):
    """A bias vector, or zeros where the torch module was built with ``bias=False``."""
    return jnp.zeros(n, dtype) if t is None else to_jax(t)


def linear_params(m: nn.Linear):
    """``(W, b)`` of an ``nn.Linear``: torch's ``weight`` is ``(d_out, d_in)``, the paper's W."""
    W = to_jax(m.weight)
    return W, _bias(m.bias, W.shape[0], W.dtype)


def norm_params(m: nn.LayerNorm):
    """``(γ, β)`` of an ``nn.LayerNorm`` (``γ = 1``/``β = 0`` where it has no affine part)."""
    (d,) = m.normalized_shape
    dtype = to_jax(torch.zeros((), dtype=_module_dtype(m))).dtype
    gamma = jnp.ones(d, dtype) if m.weight is None else to_jax(m.weight)
    return gamma, _bias(m.bias, d, dtype)


def _module_dtype(m):
    return next((p.dtype for p in m.parameters()), torch.get_default_dtype())


def set_linear(m: nn.Linear, W, b):
    m.weight.copy_(to_torch(W))
    m.bias.copy_(to_torch(b))


def set_norm(m: nn.LayerNorm, gamma, beta):
    m.weight.copy_(to_torch(gamma))
    m.bias.copy_(to_torch(beta))


def check_layer_norm(name, where, m, eps):
    if not isinstance(m, nn.LayerNorm):
        fail(name, where, f"must be an nn.LayerNorm (Algorithm 6), got {type(m).__name__}")
    if len(m.normalized_shape) != 1:
        fail(name, where, f"normalises over {m.normalized_shape}; Algorithm 6 over one axis")
    if m.eps != eps:
        fail(name, where, f"has eps = {m.eps}, but eps = {eps} was requested; pass eps={m.eps}")


def check_no_dropout(name, model: nn.Module):
    """Dropout is not in the paper. A module in eval mode applies none, so only a dropout module
    (or an ``nn.MultiheadAttention`` with attention dropout) in training mode with p > 0 fails."""
    for where, m in model.named_modules():
        if isinstance(m, nn.Dropout):
            p = m.p
        elif isinstance(m, nn.MultiheadAttention):
            p = m.dropout  # a float: the attention-weight dropout
        else:
            continue
        if m.training and p > 0:
            fail(
                name,
                f"model.{where}",
                f"applies dropout p = {p} in training mode; the paper's algorithms have no "
                "dropout: call model.eval() or set the probability to 0",
            )


def check_head_dims(name, hp):
    if hp["d_attn"] != hp["d_mid"] or hp["d_attn"] * hp["H"] != hp["d_e"]:
        fail(
            name,
            "theta",
            f"has d_attn = {hp['d_attn']}, d_mid = {hp['d_mid']}, H = {hp['H']}, "
            f"d_e = {hp['d_e']}; the reference implementation needs d_attn = d_mid = d_e / H",
        )


# HF activation names ⇄ the package's functions. Only exact matches: "gelu_fast" (a rounded
# constant) and "quick_gelu" are different functions and are refused.
_HF_ACTIVATIONS = {
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
}
_HF_NAMES = {gelu: "gelu", gelu_tanh: "gelu_new", relu: "relu"}


def activation_from_hf(name, argument, act):
    if not isinstance(act, str) or act not in _HF_ACTIVATIONS:
        fail(name, argument, f"= {act!r} is not one of {sorted(_HF_ACTIVATIONS)}")
    return _HF_ACTIVATIONS[act]


def activation_to_hf(name, activation):
    if not callable(activation) or activation not in _HF_NAMES:
        fail(
            name,
            "activation",
            f"= {activation!r}; expected one of formal_algorithms.gelu, gelu_tanh, relu",
        )
    return _HF_NAMES[activation]
