"""Hugging Face ``Qwen2ForCausalLM`` and ``MistralForCausalLM`` against Algorithm 10 with their
families' substitutions (:mod:`formal_algorithms.families.qwen2`: Llama with ``b_q, b_k, b_v``;
:mod:`formal_algorithms.families.mistral`: Llama with a sliding-window mask): Llama's table
(:mod:`.llama`), its module names and its known float32 departures, read with each family's
loader (``*_config``, ``*_from_state_dict``)."""

from __future__ import annotations

import jax.numpy as jnp

from .base import PreLNDecoder
from .llama import Llama


class Qwen2(Llama):
    name = "Algorithm 10 with Qwen2's substitutions (families.qwen2)"
    rms_classes = ("Qwen2RMSNorm",)
    modeling = "transformers.models.qwen2.modeling_qwen2"
    hf_name = "Qwen2"

    def check(self, config):
        """What Qwen2 does not write is refused by :func:`families.qwen2.qwen2_config`."""

    def load(self, config, state):
        from ....families.qwen2 import qwen2_config, qwen2_from_state_dict

        return qwen2_from_state_dict(state, **qwen2_config(config.to_dict()))

    def paper(self):
        from ....families.qwen2 import qwen2_logits

        return qwen2_logits, (jnp.asarray(self.x), self.theta), self.kwargs

    def biases(self, k):
        return PreLNDecoder.biases(self, k)  # b_q, b_k, b_v: a dropped one is named


class Mistral(Llama):
    name = "Algorithm 10 with Mistral's substitutions (families.mistral)"
    rms_classes = ("MistralRMSNorm",)
    modeling = "transformers.models.mistral.modeling_mistral"
    hf_name = "Mistral"

    def check(self, config):
        """What Mistral does not write is refused by :func:`families.mistral.mistral_config`."""

    def load(self, config, state):
        from ....families.mistral import mistral_config, mistral_from_state_dict

        return mistral_from_state_dict(state, **mistral_config(config.to_dict()))

    def paper(self):
        from ....families.mistral import mistral_logits

        kwargs = {**self.kwargs, "window": self.theta.config.window}
        return mistral_logits, (jnp.asarray(self.x), self.theta), kwargs


class Gemma(Llama):
    name = "Algorithm 10 with Gemma's substitutions (families.gemma)"
    rms_classes = ("GemmaRMSNorm",)
    norm_offset = 1.0  # Gemma's RMSnorm multiplies by 1 + γ
    modeling = "transformers.models.gemma.modeling_gemma"
    hf_name = "Gemma"

    def check(self, config):
        """What Gemma does not write is refused by :func:`families.gemma.gemma_config`."""

    def load(self, config, state):
        from ....families.gemma import gemma_config, gemma_from_state_dict

        return gemma_from_state_dict(state, **gemma_config(config.to_dict()))

    def paper(self):
        from ....families.gemma import gemma_logits

        return gemma_logits, (jnp.asarray(self.x), self.theta), self.kwargs

    def activation_name(self):
        return "the tanh GELU (GeGLU)"

    def norm_of(self, k):
        found = super().norm_of(k)
        if found is None:
            return None
        gamma, beta, source, eps = found
        return 1.0 + gamma, beta, source, eps  # the norm's γ is 1 + the stored offset
