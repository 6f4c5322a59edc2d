"""Hugging Face ``GPTNeoXForCausalLM`` (Pythia) and ``PhiForCausalLM`` against Algorithm 10 with
their families' substitutions (:mod:`formal_algorithms.families.gpt_neox`: RoPE on the first d_rot
rows of each head's Q and K, no ``W_p``, and the parallel residual ``X + attention(LN₁ X) +
MLP(LN₂ X)``; :mod:`formal_algorithms.families.phi`: the same block with one norm for both
branches, separate q/k/v projections, ``W_u X + b_u 1ᵀ``). In the parallel block line 6 adds
nothing to X before line 7 reads it: its row is the attention branch (the trace's part
"attention"), and line 7's norm reads line 5's input (Phi's line 7 is line 5's norm again)."""

from __future__ import annotations

import jax.numpy as jnp

from ..capture import cols
from .base import (
    COLS,
    PreLNDecoder,
    Tap,
    decoder_parts,
    float_state,
    heads,
)
from .llama import float32_rope, float32_softmax

L_ = "gpt_neox.layers.{i}"
A_ = f"{L_}.attention"


def head_rows(k):
    """Block ``k`` (q, k, v) of each head h of a projection whose rows are, head by head, that
    head's query, key and value rows (GPT-NeoX's ``query_key_value``)."""

    def take(values, family):
        a = cols(values[0])
        d = a.shape[0] // (3 * family.H)
        return [
            ({"h": h}, a[(3 * (h - 1) + k) * d : (3 * (h - 1) + k + 1) * d], f", head {h}")
            for h in range(1, family.H + 1)
        ]

    return take


def parallel_parts(L_, A_, qkv, norm2, final_norm, **evidence):
    """The table and evidence of a parallel block (:func:`.base.decoder_parts`): ``qkv`` the taps
    of Algorithm 4's lines 1-3, ``A_`` the attention module (its output projection ``dense``),
    ``norm2`` line 7's norm module, ``evidence`` the modules the evidence reads; line 6's row is the
    attention branch (``dense``'s output)."""
    branch = Tap(6, 10, 6, f"{A_}.dense", "out", COLS, "attention")
    first = Tap(3, 10, 3, L_.format(i=0), "in")
    norm1, out = f"{L_}.input_layernorm", f"{A_}.dense"
    return decoder_parts(first, norm1, qkv, A_, out, branch, norm2, L_, final_norm, **evidence)


QKV = [Tap(6, 4, n, f"{A_}.query_key_value", "out", head_rows(n - 1)) for n in (1, 2, 3)]
EVIDENCE = dict(
    attention_input=f"{A_}.query_key_value", mlp=f"{L_}.mlp", activation=f"{L_}.mlp.act"
)
NORM2, FINAL = f"{L_}.post_attention_layernorm", "gpt_neox.final_layer_norm"
TABLE, EXTRAS = parallel_parts(L_, A_, QKV, NORM2, FINAL, **EVIDENCE)
# use_parallel_residual=False: Algorithm 10's own sequential layer (line 6 the residual sum)
SEQUENTIAL_TABLE, SEQUENTIAL_EXTRAS = decoder_parts(
    Tap(3, 10, 3, L_.format(i=0), "in"),
    f"{L_}.input_layernorm",
    QKV,
    A_,
    f"{A_}.dense",
    Tap(6, 10, 6, NORM2, "in"),
    NORM2,
    L_,
    FINAL,
    **EVIDENCE,
)

P_ = "model.layers.{i}"
PHI_TABLE, PHI_EXTRAS = parallel_parts(
    P_,
    f"{P_}.self_attn",
    [Tap(6, 4, n + 1, f"{P_}.self_attn.{m}_proj", "out", heads()) for n, m in enumerate("qkv")],
    f"{P_}.input_layernorm",  # Phi's one norm: line 7's X̃ is line 5's
    "model.final_layernorm",
    attention_input=f"{P_}.self_attn.q_proj",
    mlp=f"{P_}.mlp",
    activation=f"{P_}.mlp.activation_fn",
)


class GptNeoX(PreLNDecoder):
    name = "Algorithm 10 with GPT-NeoX's substitutions (families.gpt_neox)"
    table, extras = TABLE, EXTRAS
    modeling = "transformers.models.gpt_neox.modeling_gpt_neox"  # its eager attention kernel
    hf_name = "GPT-NeoX"
    parallel = True  # use_parallel_residual (Phi's block is always parallel)

    def __init__(self, model):
        from ....families.gpt_neox import gpt_neox_config, gpt_neox_from_state_dict

        config = model.config
        self.parallel = bool(config.use_parallel_residual)
        if not self.parallel:
            self.table, self.extras = SEQUENTIAL_TABLE, SEQUENTIAL_EXTRAS
        self.model = model
        tied = model.lm_head.weight is model.gpt_neox.embed_in.weight
        state = float_state(model, "lm_head.weight" if tied else None)
        self.theta = gpt_neox_from_state_dict(state, **gpt_neox_config(config.to_dict()))
        self.kwargs = {"eps": self.theta.config.eps}  # agrees with θ.config; the evidence reads it
        self.H, self.L = config.num_attention_heads, config.num_hidden_layers

    def rotary_module(self):
        return self.model.gpt_neox.rotary_emb

    def contexts(self):
        return [float32_rope(self)] if self.float64 else []

    def attention_kernel(self):
        return float32_softmax(self) if self.float64 else super().attention_kernel()

    def norm_input(self, line, l):
        if line == 7 and self.parallel:  # line 7 normalises X before line 6, as line 5 does
            return super().norm_input(5, l)
        return super().norm_input(line, l)

    def paper(self):
        from ....families.gpt_neox import gpt_neox_logits

        return gpt_neox_logits, (jnp.asarray(self.x), self.theta), self.kwargs


class Phi(GptNeoX):
    name = "Algorithm 10 with Phi's substitutions (families.phi)"
    table, extras = PHI_TABLE, PHI_EXTRAS
    norm_params = {5: ("gamma1", "beta1"), 7: ("gamma1", "beta1"), 10: ("gamma", "beta")}
    modeling = "transformers.models.phi.modeling_phi"
    hf_name = "Phi"

    def __init__(self, model):
        from ....families.phi import phi_config, phi_from_state_dict

        self.model = model
        config = model.config
        tied = model.lm_head.weight is model.model.embed_tokens.weight
        state = float_state(model, "lm_head.weight" if tied else None)
        self.theta = phi_from_state_dict(state, **phi_config(config.to_dict()))
        self.kwargs = {"eps": self.theta.config.eps}  # agrees with θ.config; the evidence reads it
        self.H, self.L = config.num_attention_heads, config.num_hidden_layers

    def rotary_module(self):
        return self.model.model.rotary_emb

    def logit_bias(self):
        return self.theta.b_u

    def paper(self):
        from ....families.phi import phi_logits

        return phi_logits, (jnp.asarray(self.x), self.theta), self.kwargs
