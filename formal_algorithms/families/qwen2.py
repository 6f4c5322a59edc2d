"""The Qwen2 family (Qwen team 2024) as the Llama family with biases on Q, K and V only.

Algorithm 10, line by line, against :mod:`.llama` (which lists Llama's substitutions):

- line 6, ``X ← X + MHAttention(X̃, X̃ | W_l, Mask)``: as Llama's (grouped-query, RoPE), but
  Algorithm 4's lines 1-3 keep the paper's biases ``b_q, b_k, b_v``; ``W_o`` stays bias-free
  (``b_o = None``). Every other line is Llama's.

θ is :class:`.llama.LlamaParams` whose attention parameters hold ``b_q`` ``(H, d_attn)``,
``b_k`` ``(G, d_attn)`` and ``b_v`` ``(G, d_mid)``; the forward is Llama's layer
(:func:`.llama.llama_layer`, which passes the biases on to
:func:`..variants.grouped_attention.grouped_attention`).

The cached form is :class:`.llama.Decoder` with ``hyperparameters=qwen2_hyperparameters``: its
fused projection carries the biases (:mod:`..practice.kv_attention`); greedy decoding equals
``generate`` (tests/tools/test_families_more.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.checks import fail
from ..paper.functions import softmax
from .core import check_config_dict
from .llama import ALGORITHM_10 as LLAMA_LINES
from .llama import (
    LlamaConfig,
    LlamaParams,
    forward_config,
    init_llama,
    llama_hyperparameters,
    rope_decoder_logits,
)
from .llama_loading import family_loader, llama_config, require

QWEN2 = "qwen2_logits (Algorithm 10 with Qwen2's substitutions)"
QWEN2_DEFAULTS = LlamaConfig(eps=1e-6)
#: Llama's replaced lines, with line 6 keeping the paper's b_q, b_k, b_v (docs/families.md's atlas).
ALGORITHM_10 = {
    **LLAMA_LINES,
    6: "`b_q, b_k, b_v` kept, no `b_o`; RoPE on Q, K ([rope](../formal_algorithms/variants/rope.py)); G ≤ H key/value sets "
    "([grouped_attention](../formal_algorithms/variants/grouped_attention.py))",
}


def unbiased(theta: LlamaParams) -> LlamaParams:
    """θ without its attention biases (what :func:`.llama.llama_hyperparameters` checks)."""
    return theta._replace(
        layers=tuple(
            layer._replace(W=layer.W._replace(b_q=None, b_k=None, b_v=None))
            for layer in theta.layers
        )
    )


def qwen2_hyperparameters(theta: LlamaParams) -> dict:
    """Llama's shape hyperparameters, and every layer's ``b_q, b_k, b_v`` present and shaped."""
    if not isinstance(theta, LlamaParams):
        fail(QWEN2, "theta", f"must be LlamaParams, got {type(theta).__name__}", TypeError)
    hp = llama_hyperparameters(unbiased(theta), QWEN2)
    for l, layer in enumerate(theta.layers):
        W = layer.W
        for name, shape in (
            ("b_q", (hp["H"], hp["d_attn"])),
            ("b_k", (hp["G"], hp["d_attn"])),
            ("b_v", (hp["G"], hp["d_mid"])),
        ):
            b = getattr(W, name)
            if b is None or np.shape(b) != shape:
                got = "None" if b is None else f"shape {np.shape(b)}"
                fail(QWEN2, f"theta.layers[{l}].W.{name}", f"is {got}, expected {shape}")
    return hp


def qwen2_logits(x, theta: LlamaParams, *, rope_base=None, eps=None):
    """Algorithm 10 with Qwen2's substitutions, without the final softmax: ``(N_V, ℓ)``; θ runs
    with ``θ.config`` (keywords must agree; a θ without one defaults to ε = 1e-6)."""
    N_V = qwen2_hyperparameters(theta)["N_V"]
    config = forward_config(QWEN2, theta, QWEN2_DEFAULTS, rope_base=rope_base, eps=eps)
    return rope_decoder_logits(x, theta, N_V, QWEN2, config)


def qwen2(x, theta: LlamaParams, *, rope_base=None, eps=None):
    """Algorithm 10 with Qwen2's substitutions: ``P = softmax(W_u X)``."""
    return softmax(qwen2_logits(x, theta, rope_base=rope_base, eps=eps))  # line 11


def init_qwen2(key, *, N_V, L, H, G, d_e, d_mlp, d_attn=None, tied=False, dtype=jnp.float32,
               config=QWEN2_DEFAULTS):  # fmt: skip
    """A random θ: :func:`.llama.init_llama`'s, with biases ``b_q, b_k, b_v`` ~ N(0, 0.02²)."""
    k_llama, k_bias = jax.random.split(key)
    shapes = dict(N_V=N_V, L=L, H=H, G=G, d_e=d_e, d_mlp=d_mlp, d_attn=d_attn, tied=tied)
    theta = init_llama(k_llama, **shapes, dtype=dtype, config=config)
    keys = iter(jax.random.split(k_bias, 3 * L))

    def b(shape):
        return 0.02 * jax.random.normal(next(keys), shape, dtype)

    layers = tuple(
        layer._replace(
            W=layer.W._replace(
                b_q=b(layer.W.W_q.shape[:2]),
                b_k=b(layer.W.W_k.shape[:2]),
                b_v=b(layer.W.W_v.shape[:2]),
            )
        )
        for layer in theta.layers
    )
    return theta._replace(layers=layers)


# ------------------------------------------------------------------------ loading

QWEN2_LOAD = "qwen2_from_state_dict"


def qwen2_config(config: dict) -> dict:
    """The keywords of :func:`qwen2_from_state_dict` from a ``Qwen2Config.to_dict()`` (θ's
    :class:`.llama.LlamaConfig` among them); what is not written is refused by name."""
    caller = "qwen2_config"
    check_config_dict(caller, config, (), "qwen2")
    require(caller, config, "use_sliding_window", (False,))
    return llama_config(config, caller, model_type="qwen2")


#: θ from Hugging Face ``Qwen2ForCausalLM`` names: Llama's tensors and the biases of ``q_proj,
#: k_proj, v_proj`` (every tensor used or refused by name; ``lm_head.weight`` absent: tied).
qwen2_from_state_dict = family_loader(QWEN2_LOAD, "Qwen2ForCausalLM", biases=True)
