"""Hugging Face ``BartForConditionalGeneration`` against Algorithm 8 with BART's substitutions
(:mod:`formal_algorithms.families.bart`: positions offset by 2 and the embedding layer norms in
lines 2-3 and 11-12, GELU, ``W_u X + b_u 1ᵀ``): nn.Transformer's Algorithm 8 table with BART's
module names. The context ``z`` is the encoder's ``input_ids``, ``x`` the decoder's; line 21's
logits are the model's output (``lm_head`` plus ``final_logits_bias``, added outside a module)."""

from __future__ import annotations

import jax.numpy as jnp
import torch

from ..alignment import key
from ..capture import softmax_cols
from .base import float_state
from .torch_transformer import KINDS, TorchTransformer, ed_parts

E_, D_ = "model.encoder.layers.{e}", "model.decoder.layers.{d}"


ENCODER_NORMS = (("self_attn_layer_norm", 5), ("final_layer_norm", 7))
DECODER_NORMS = (
    ("self_attn_layer_norm", 14),
    ("encoder_attn_layer_norm", 16),
    ("final_layer_norm", 18),
)

TABLE, EXTRAS = ed_parts(
    E_,
    D_,
    ("model.encoder.layers.0", "model.decoder.layers.0"),
    "encoder_attn",
    (ENCODER_NORMS, DECODER_NORMS),
    ("fc1", "fc2"),
)


class Bart(TorchTransformer):
    name = "Algorithm 8 with BART's substitutions (families.bart)"
    table, extras, kinds, causal_sites = TABLE, EXTRAS, KINDS, (14,)
    weights_kwargs = ()
    hf_name = "BART"

    def __init__(self, model):  # no W_e, W_p, W_u around it: BART's embeddings are inside
        from ....families.bart import ACTIVATIONS, bart_config, bart_from_state_dict

        self.model = model
        config = model.config
        tied = model.lm_head.weight is model.model.shared.weight
        state = float_state(model, "lm_head.weight" if tied else None)
        if tied:  # the copies transformers ties to model.shared
            for name in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
                state.pop(name, None)
        self.theta = bart_from_state_dict(state, **bart_config(config.to_dict()))
        own = self.theta.config
        self.kwargs = {"eps": own.eps, "activation": ACTIVATIONS[own.activation]}
        self.H = config.encoder_attention_heads

    def stacks(self):
        return {
            "e": len(self.model.model.encoder.layers),
            "d": len(self.model.model.decoder.layers),
        }

    def paper(self):
        from ....families.bart import bart_logits

        return bart_logits, (jnp.asarray(self.z), jnp.asarray(self.x), self.theta), {}

    def call(self):
        z, x = torch.as_tensor(self.z)[None], torch.as_tensor(self.x)[None]
        return self.model(input_ids=z, decoder_input_ids=x)

    def logit_bias(self):
        return self.theta.b_u

    def after_run(self, output, exposed, extra, store):
        """Line 21: the model's logits (``final_logits_bias`` is added outside ``lm_head``); the
        MLP's activation: fc1's output → fc2's input."""
        logits = output.logits[0].detach().to(torch.float64).numpy().T
        source = "the model's logits (lm_head output + final_logits_bias)"
        exposed[key(8, 21, 8, 21, "logits")] = (logits, source)
        exposed[key(8, 21, 8, 21, "P")] = (softmax_cols(logits), "softmax of " + source)
        extra[("logits", 21, None)] = (None, logits)
        self.mlp_activations(extra)
