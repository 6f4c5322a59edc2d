"""The property toolkit: invariant checkers and Hypothesis strategies (tools layer).

``invariants`` holds the checkers for functions written with this library and the strategies; see
its docstring. ``import formal_algorithms.testing as T`` gives all of them.
"""

from .invariants import (
    SMALL_DIMS,
    SMALL_LENGTHS,
    InvariantViolation,
    check_attention_reductions,
    check_causal_jacobian,
    check_causal_tokens,
    check_column_stochastic,
    check_context_order_invariance,
    check_context_permutation_invariance,
    check_every_parameter_matters,
    check_incremental_matches_full,
    check_jit,
    check_layer_norm,
    check_layer_norm_columns,
    check_mask_respect,
    check_next_token_loss,
    check_permutation_equivariance,
    check_residual_identity,
    check_shape_contract,
    check_vmap,
    dims,
    masks,
    params,
    seeds,
    token_sequences,
)
