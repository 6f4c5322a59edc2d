"""The Gemma family (Gemma Team 2024) as the Llama family with Gemma's substitutions.

Algorithm 10, line by line, against :mod:`.llama` (which lists Llama's substitutions):

- lines 1-3: ``e ← √d_e · W_e[:, x[t]]`` (the embedding scaled; √d_e rounded to float32, then to
  θ's dtype, as transformers keeps it in a float32 buffer); ``W_u = W_eᵀ`` (tied, unscaled);
- lines 5, 7, 10: RMSnorm with ``1 + γ`` in place of γ (the stored γ is an offset from one);
- line 8: GeGLU, ``W_down (GELU_tanh(W_gate X̃) ⊙ W_up X̃)`` (:mod:`..variants.gated_mlp` with the
  tanh approximation of GELU);
- line 6: as Llama's, with a head dimension ``d_attn`` of its own (not ``d_e / H``).

θ is :class:`.llama.LlamaParams` whose :class:`.llama.LlamaConfig` says so (``embed_scale``,
``norm_offset = 1``, ``activation = "gelu_tanh"``). The literal forward is Llama's, and so is the
cached one: :class:`.llama.Decoder` reads the same config (greedy decoding equals ``generate``).
"""

from __future__ import annotations

from ..paper.checks import fail
from ..paper.functions import softmax
from .core import check_config_dict
from .llama import (
    LlamaConfig,
    LlamaParams,
    forward_config,
    llama_hyperparameters,
    rope_decoder_logits,
)
from .llama_loading import family_loader, rope_base_of

GEMMA = "gemma_logits (Algorithm 10 with Gemma's substitutions)"
GEMMA_DEFAULTS = LlamaConfig(eps=1e-6, embed_scale=True, norm_offset=1.0, activation="gelu_tanh")

#: Algorithm 10's lines that Gemma replaces (docs/families.md's atlas); the rest as printed.
ALGORITHM_10 = {
    2: "`e_t ← √d_e · W_e[:, x[t]]`: no `W_p` (RoPE in line 6)",
    5: "`rms_norm(X[:, t] | 1 + γ_l^1)`",
    6: "no biases; RoPE on Q, K; G ≤ H key/value sets; `d_attn` its own (not `d_e / H`)",
    7: "`rms_norm(X[:, t] | 1 + γ_l^2)`",
    8: "`W_down (GELU_tanh(W_gate X̃) ⊙ W_up X̃)`, no biases (GeGLU)",
    10: "`rms_norm(X[:, t] | 1 + γ)`",
    11: "`W_u = W_eᵀ` (tied)",
}


def gemma_logits(x, theta: LlamaParams, *, rope_base=None, eps=None):
    """Algorithm 10 with Gemma's substitutions, without the final softmax: ``(N_V, ℓ)``; θ runs
    with ``θ.config`` (keywords must agree with it)."""
    N_V = llama_hyperparameters(theta, GEMMA)["N_V"]
    own = theta.config
    if own is not None and not own.embed_scale and own.norm_offset == 0:
        fail(
            GEMMA,
            "theta",
            f"carries another family's configuration ({own}: no √d_e scaling, "
            "no 1 + γ); load a Gemma θ (gemma_from_state_dict) or run it with its own family",
        )
    config = forward_config(GEMMA, theta, GEMMA_DEFAULTS, rope_base=rope_base, eps=eps)
    return rope_decoder_logits(x, theta, N_V, GEMMA, config)


def gemma(x, theta: LlamaParams, **kw):
    """Algorithm 10 with Gemma's substitutions: ``P = softmax(W_u X)``."""
    return softmax(gemma_logits(x, theta, **kw))  # line 11


def gemma_config(config: dict) -> dict:
    """The keywords of :func:`gemma_from_state_dict` from a transformers ``GemmaConfig``'s
    ``to_dict()`` (θ's :class:`.llama.LlamaConfig` among them); what is not written is refused by
    name."""
    caller = "gemma_config"
    needed = ("num_attention_heads", "num_hidden_layers", "rms_norm_eps")
    check_config_dict(caller, config, needed, "gemma")
    act = config.get("hidden_activation") or config.get("hidden_act")
    if act != "gelu_pytorch_tanh":
        fail(caller, "config", f"has activation {act!r}; Gemma's GeGLU is gelu_pytorch_tanh")
    own = LlamaConfig(
        rope_base=rope_base_of(caller, config),
        eps=float(config["rms_norm_eps"]),
        embed_scale=True,
        norm_offset=1.0,
        activation="gelu_tanh",
    )
    H = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or H
    return dict(n_layers=config["num_hidden_layers"], n_heads=H, n_kv_heads=n_kv, config=own)


#: θ from Hugging Face ``GemmaForCausalLM`` names: Llama's (every tensor used or refused by name).
gemma_from_state_dict = family_loader("gemma_from_state_dict", "GemmaForCausalLM")
