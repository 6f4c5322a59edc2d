"""The Mistral family (Jiang et al. 2023) as the Llama family with a sliding-window mask.

Algorithm 10, line by line, against :mod:`.llama` (which lists Llama's substitutions):

- the mask of line 6: eq. 3's unidirectional ``Mask[t_z, t_x] = [[t_z ≤ t_x]]`` becomes
  ``[[t_x − w < t_z ≤ t_x]]`` (:func:`..variants.sliding_window.sliding_window_mask`); every other
  line is Llama's, and θ is :class:`.llama.LlamaParams`.

The cached form is :class:`.llama.Decoder` with ``window=w``: the cache keeps every position and
the mask over it is the window's (:func:`..practice.kv_attention.position_mask`); greedy decoding
past the window equals ``generate``.
"""

from __future__ import annotations

from ..paper.checks import fail
from ..paper.functions import softmax
from .llama import LlamaParams, llama_from_state_dict, llama_hyperparameters, rope_decoder_logits
from .qwen2 import require, rope_base_of

MISTRAL = "mistral_logits (Algorithm 10 with Mistral's substitutions)"


def mistral_logits(x, theta: LlamaParams, *, window: int, rope_base=10000.0, eps=1e-5):
    """Algorithm 10 with Mistral's substitutions, without the final softmax: ``(N_V, ℓ)``.
    ``window``: w, the positions each token sees (itself and the w − 1 before it)."""
    N_V = llama_hyperparameters(theta)["N_V"]
    return rope_decoder_logits(x, theta, N_V, MISTRAL, rope_base=rope_base, eps=eps, window=window)


def mistral(x, theta: LlamaParams, *, window: int, rope_base=10000.0, eps=1e-5):
    """Algorithm 10 with Mistral's substitutions: ``P = softmax(W_u X)``."""
    return softmax(mistral_logits(x, theta, window=window, rope_base=rope_base, eps=eps))  # line 11


def mistral_config(config: dict) -> dict:
    """The keywords of :func:`mistral_from_state_dict` (``load``) and :func:`mistral_logits`
    (``forward``) from a ``MistralConfig.to_dict()``; what is not written is refused by name."""
    caller = "mistral_config"
    require(caller, config, "hidden_act", ("silu",))
    H = config["num_attention_heads"]
    if config.get("head_dim") not in (None, config["hidden_size"] // H):
        fail(caller, "config", f"has head_dim = {config['head_dim']}, not hidden_size / heads")
    if config.get("sliding_window") is None:
        fail(caller, "config", "has no sliding_window: that is the Llama family (llama_logits)")
    load = dict(
        n_layers=config["num_hidden_layers"],
        n_heads=H,
        n_kv_heads=config.get("num_key_value_heads") or H,
    )
    forward = dict(
        window=config["sliding_window"],
        rope_base=rope_base_of(caller, config),
        eps=config["rms_norm_eps"],
    )
    return dict(load=load, forward=forward)


def mistral_from_state_dict(
    state: dict, *, n_layers: int, n_heads: int, n_kv_heads: int, dtype=None
) -> LlamaParams:
    """θ from Hugging Face ``MistralForCausalLM`` names: Llama's (:func:`.llama.
    llama_from_state_dict`, which uses every tensor of ``state`` or refuses it)."""
    return llama_from_state_dict(
        state,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        dtype=dtype,
        caller="mistral_from_state_dict",
    )
