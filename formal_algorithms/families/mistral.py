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
from .core import check_config_dict
from .llama import ALGORITHM_10 as LLAMA_LINES
from .llama import (
    LlamaConfig,
    LlamaParams,
    forward_config,
    llama_hyperparameters,
    rope_decoder_logits,
)
from .llama_loading import family_loader, llama_config

MISTRAL = "mistral_logits (Algorithm 10 with Mistral's substitutions)"
#: Llama's replaced lines, with line 6's Mask a sliding window (docs/families.md's atlas).
ALGORITHM_10 = {
    **LLAMA_LINES,
    6: LLAMA_LINES[6] + "; `Mask[t_z, t_x] = [[t_x − w < t_z ≤ t_x]]` "
    "([sliding_window](../formal_algorithms/variants/sliding_window.py))",
}


def mistral_logits(x, theta: LlamaParams, *, window=None, rope_base=None, eps=None):
    """Algorithm 10 with Mistral's substitutions, without the final softmax: ``(N_V, ℓ)``; θ runs
    with ``θ.config`` (keywords must agree), whose ``window`` w is the positions each token sees
    (itself and the w − 1 before it)."""
    N_V = llama_hyperparameters(theta, MISTRAL)["N_V"]
    given = dict(window=window, rope_base=rope_base, eps=eps)
    config = forward_config(MISTRAL, theta, LlamaConfig(), **given)
    if config.window is None:
        fail(MISTRAL, "window", "is not set (θ.config.window is None): that is llama_logits")
    return rope_decoder_logits(x, theta, N_V, MISTRAL, config)


def mistral(x, theta: LlamaParams, *, window=None, rope_base=None, eps=None):
    """Algorithm 10 with Mistral's substitutions: ``P = softmax(W_u X)``."""
    return softmax(mistral_logits(x, theta, window=window, rope_base=rope_base, eps=eps))  # line 11


def mistral_config(config: dict) -> dict:
    """The keywords of :func:`mistral_from_state_dict` from a ``MistralConfig.to_dict()`` (θ's
    :class:`.llama.LlamaConfig`, with the window, among them); what is not written is refused by
    name."""
    caller = "mistral_config"
    check_config_dict(caller, config, (), "mistral")
    if config.get("sliding_window") is None:
        fail(caller, "config", "has no sliding_window: that is the Llama family (llama_logits)")
    window = config["sliding_window"]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        fail(caller, "config", f"has sliding_window = {window!r}; it must be an integer >= 1")
    return llama_config(config, caller, window=config["sliding_window"], model_type="mistral")


#: θ from Hugging Face ``MistralForCausalLM`` names: Llama's (every tensor used or refused by name).
mistral_from_state_dict = family_loader("mistral_from_state_dict", "MistralForCausalLM")
