"""Public signatures carry the paper's symbols as jaxtyping shapes, and they hold at run time:
each call below runs under ``jaxtyping.jaxtyped(typechecker=beartype)``, which binds every named
dimension (d_x, ell_x, …) across arguments and result and fails on any inconsistency."""

import inspect

import jax
import jax.numpy as jnp
import pytest
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

import formal_algorithms as fa


def checked(f):
    return jaxtyped(typechecker=beartype)(f)


key = jax.random.key(0)
W4 = fa.init_attention(key, 3, 5, 2, 4)
W5 = fa.init_mh_attention(key, 2, 3, 5, 2, 4, 6)
X, Z = jnp.ones((3, 4)), jnp.ones((5, 7))
x = jnp.asarray([1, 2, 3])
D = fa.init_d_transformer(key, N_V=9, ell_max=6, L=1, H=2, d_e=4, d_mlp=8)
E = fa.init_e_transformer(key, N_V=9, ell_max=6, L=1, H=2, d_e=4, d_mlp=8, d_f=3)
ED = fa.init_ed_transformer(key, N_V=9, ell_max=6, L_enc=1, L_dec=1, H=2, d_e=4, d_mlp=8)

VALID = [
    (fa.softmax, (jnp.ones((4, 3)),)),
    (fa.softmax, (jnp.ones(4),)),
    (fa.gelu, (jnp.ones((2, 3)),)),
    (fa.token_embedding, (2, D.W_e)),
    (fa.positional_embedding, (jnp.asarray(1), D.W_p)),
    (fa.embed, (x, D.W_e, D.W_p)),
    (fa.unembedding, (jnp.ones((4, 3)), D.W_u)),
    (fa.unidirectional_mask, (4,)),
    (fa.causal_mask, (jnp.arange(5), jnp.asarray([4]))),
    (
        fa.single_query_attention,
        (jnp.ones(3), jnp.ones((3, 5)), fa.init_attention(key, 3, 3, 2, 4)),
    ),
    (fa.attention, (X, Z, W4, fa.bidirectional_mask(7, 4))),
    (fa.mh_attention, (X, Z, W5)),
    (fa.layer_norm, (jnp.ones(4), jnp.ones(4), jnp.zeros(4))),
    (fa.layer_norm_columns, (jnp.ones((4, 3)), jnp.ones(4), jnp.zeros(4))),
    (fa.d_transformer, (x, D)),
    (fa.e_transformer_logits, (x, E)),
    (fa.ed_transformer, (x[:2], x, ED)),
]


@pytest.mark.parametrize(
    "f, args", VALID, ids=[f"{f.__name__}-{i}" for i, (f, _) in enumerate(VALID)]
)
def test_valid_calls_satisfy_their_annotations(f, args):
    checked(f)(*args)


@pytest.mark.parametrize(
    "f, args",
    [
        (fa.attention, (X, Z, W4, jnp.ones((4, 7), bool))),  # Mask is (ℓ_z, ℓ_x), not (ℓ_x, ℓ_z)
        (fa.layer_norm, (jnp.ones(4), jnp.ones(5), jnp.zeros(4))),  # γ of another d_e
        (
            fa.mlp,
            (
                jnp.ones((4, 2)),
                jnp.ones((8, 4)),
                jnp.ones(7),
                jnp.ones((4, 8)),
                jnp.ones(4),
                fa.relu,
            ),
        ),
        (fa.embed, (jnp.ones(3), D.W_e, D.W_p)),  # float token ids
    ],
)
def test_inconsistent_shapes_fail_the_annotations(f, args):
    with pytest.raises(TypeCheckError):
        checked(f)(*args)


def test_every_array_argument_of_the_algorithms_is_annotated():
    algorithms = [
        fa.softmax, fa.gelu, fa.token_embedding, fa.positional_embedding, fa.embed, fa.unembedding,
        fa.single_query_attention, fa.attention, fa.mh_attention, fa.layer_norm, fa.layer_norm_columns,
        fa.ed_transformer, fa.ed_transformer_logits, fa.e_transformer, fa.e_transformer_logits,
        fa.d_transformer, fa.d_transformer_logits, fa.mlp,
    ]  # fmt: skip
    for f in algorithms:
        sig = inspect.signature(f)
        missing = [
            name
            for name, p in sig.parameters.items()
            if p.annotation is inspect.Parameter.empty and name not in ("activation", "eps")
        ]
        assert not missing, f"{f.__name__}: unannotated {missing}"
        assert sig.return_annotation is not inspect.Signature.empty, f.__name__
