"""Variants built from the paper's primitives, each in plain view (see docs/variants.md).

- :mod:`.placement`: Post-LN and Pre-LN forms of Algorithms 8, 9, 10.
- :mod:`.gopher`: RMSnorm in Algorithm 10 (Gopher, paper §6).
- :mod:`.resi_dual`: ResiDual's dual residual streams (Xie et al. 2023), decoder-only.
- :mod:`.linear_attention`: causal linear attention, parallel and recurrent (fast weights).
- :mod:`.performer`: FAVOR+ positive orthogonal random features (Performers), bidirectional and
  causal prefix-sum forms (import it as ``formal_algorithms.variants.performer``).
- :mod:`.classification`: a classification head on Algorithms 9 and 10, its loss, per-sequence
  and minibatch training (pretrain, then fine-tune; ``formal_algorithms.variants.classification``).
- :mod:`.positions`: hard-coded sinusoids as a drop-in ``W_p``, and freezing it in training.
- :mod:`.diagnostics`: per-layer gradient norms at initialisation (Xiong et al. 2020).
- Today's substitutions (issue 17; import each module by name): :mod:`.rope` (rotary positions,
  Algorithm 4 lines 1-2), :mod:`.grouped_attention` (grouped-query and multi-query attention,
  bias-free projections), :mod:`.gated_mlp` (SwiGLU, GeGLU), :mod:`.alibi` (linear biases at
  Algorithm 4 line 4), :mod:`.factorised` (ALBERT's factorised embeddings, cross-layer sharing).
- Issue 30: :mod:`.sliding_window` (eq. 3 with a window), :mod:`.partial_rope` (RoPE on d_rot rows),
  :mod:`.relative_bias` (T5's bucketed relative position bias on Algorithm 4's scores, unscaled).

This is an edge of the library: it imports the primitives and architectures; only the model
families (:mod:`formal_algorithms.families`) build on it.
"""

from .diagnostics import (
    layer_gradient_norms,
    next_token_loss,
    xavier_std,
    xiong_init_d_transformer,
)
from .gopher import (
    GopherDTransformerParams,
    RMSLayer,
    gopher_d_transformer,
    gopher_d_transformer_logits,
    gopher_params,
    init_gopher_d_transformer,
    rms_pre_ln_layer,
)
from .linear_attention import (
    causal_linear_attention,
    elu_plus_one,
    fast_weight_attention,
    mh_causal_linear_attention,
    mh_fast_weight_attention,
)
from .placement import (
    FORMS,
    PAPER_PLACEMENT,
    PreLNEDTransformerParams,
    PreLNETransformerParams,
    e_head,
    init_post_ln_d_transformer,
    init_pre_ln_e_transformer,
    init_pre_ln_ed_transformer,
    post_ln_d_transformer,
    post_ln_d_transformer_logits,
    post_ln_e_transformer_logits,
    post_ln_ed_transformer_logits,
    post_ln_stack,
    pre_ln_d_transformer_logits,
    pre_ln_e_transformer,
    pre_ln_e_transformer_logits,
    pre_ln_ed_decoder_layer,
    pre_ln_ed_transformer,
    pre_ln_ed_transformer_logits,
    pre_ln_stack,
    with_final_norms,
)
from .positions import SINUSOIDS, frozen_positions, with_fixed_positions
from .resi_dual import resi_dual_d_transformer, resi_dual_d_transformer_logits

__all__ = [
    "FORMS",
    "GopherDTransformerParams",
    "PAPER_PLACEMENT",
    "PreLNEDTransformerParams",
    "PreLNETransformerParams",
    "RMSLayer",
    "SINUSOIDS",
    "causal_linear_attention",
    "e_head",
    "elu_plus_one",
    "fast_weight_attention",
    "frozen_positions",
    "gopher_d_transformer",
    "gopher_d_transformer_logits",
    "gopher_params",
    "init_gopher_d_transformer",
    "init_post_ln_d_transformer",
    "init_pre_ln_e_transformer",
    "init_pre_ln_ed_transformer",
    "layer_gradient_norms",
    "mh_causal_linear_attention",
    "mh_fast_weight_attention",
    "next_token_loss",
    "post_ln_d_transformer",
    "post_ln_d_transformer_logits",
    "post_ln_e_transformer_logits",
    "post_ln_ed_transformer_logits",
    "post_ln_stack",
    "pre_ln_d_transformer_logits",
    "pre_ln_e_transformer",
    "pre_ln_e_transformer_logits",
    "pre_ln_ed_decoder_layer",
    "pre_ln_ed_transformer",
    "pre_ln_ed_transformer_logits",
    "pre_ln_stack",
    "resi_dual_d_transformer",
    "resi_dual_d_transformer_logits",
    "rms_pre_ln_layer",
    "with_final_norms",
    "with_fixed_positions",
    "xavier_std",
    "xiong_init_d_transformer",
]
