"""The property toolkit: invariant checkers and Hypothesis strategies (tools layer).

``invariants`` holds the checkers for functions written with this library and the strategies; see
its docstring. ``import formal_algorithms.testing as T`` gives all of them.

``adapters`` turns anyone's model (PyTorch, Hugging Face, JAX, Equinox, Flax, any callable) into a
``TokenModel``; ``conformance`` checks the paper's invariants on it and ``run_battery`` reports
(``formal-algorithms check``). Frameworks are imported only when an adapter is given their model.
"""

from .adapters import (
    NotSupported,
    TokenModel,
    from_callable,
    from_equinox,
    from_flax,
    from_hf,
    from_jax,
    from_paper,
    from_torch,
)
from .conformance import (
    ConformanceReport,
    ConformanceViolation,
    NotApplicable,
    check_attention_implementations,
    check_batch,
    check_batched_generation,
    check_bfloat16,
    check_bidirectionality,
    check_cache,
    check_causality,
    check_determinism,
    check_distributions,
    check_eos,
    check_label_shift,
    check_padding,
    check_permutation,
    probe_lengths,
    run_battery,
)
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
