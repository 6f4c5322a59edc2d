"""Algorithm 8 (``ed_transformer``) equals ``torch.nn.Transformer``, and the converters are exact.

The reference is torch itself: an ``nn.Transformer`` built here from a fixed seed with every weight,
bias and LayerNorm γ/β re-randomised (torch initialises biases and β to 0 and γ to 1, which would
hide a missing or an extra norm, or a swapped bias). The embeddings and the unembedding are wrapped
around it in torch by :func:`_torch_reference`, written here independently of the package.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
from torch_reference import randomise

import formal_algorithms as fa
from formal_algorithms.interop.torch_transformer import (
    ed_transformer_from_torch,
    ed_transformer_to_torch,
    torch_ed_transformer_logits,
)

# (N_V, ℓ_max, L_enc, L_dec, H, d_e, d_mlp, ℓ_z, ℓ_x, tied, batch_first)
SHAPES = [
    (37, 16, 2, 1, 2, 16, 24, 7, 5, False, True),
    (41, 20, 1, 2, 4, 32, 48, 4, 9, True, False),
    (30, 12, 1, 2, 3, 24, 40, 12, 12, False, True),  # odd H; both sequences fill ℓ_max
]
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}
# Every shape in one dtype at least, the first in both. Each (shape, dtype, tied) pair costs one XLA
# compilation of the jitted Algorithm 8 (~3 s on a small CPU); the other tests reuse these.
CASES = [(SHAPES[0], torch.float32), (SHAPES[0], torch.float64), (SHAPES[1], torch.float64),
         (SHAPES[2], torch.float32)]  # fmt: skip
_logits = jax.jit(fa.ed_transformer_logits)


def _transformer(d_e, H, L_enc, L_dec, d_mlp, **kwargs):
    """A stock ``nn.Transformer``. Its constructor warns that the nested-tensor fast path is off
    for ``batch_first=False`` or odd H; that path only skips padding, never changes arithmetic."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "enable_nested_tensor is True", UserWarning)
        return nn.Transformer(d_e, H, L_enc, L_dec, d_mlp, dropout=0.0, **kwargs)


def _reference(shape, dtype=torch.float32, seed=0, **kwargs):
    """A random torch model (final norms still in place), embeddings, and token sequences."""
    N_V, ell_max, L_enc, L_dec, H, d_e, d_mlp, ell_z, ell_x, tied, batch_first = shape
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = _transformer(d_e, H, L_enc, L_dec, d_mlp, batch_first=batch_first, **kwargs)
    randomise(model, g)
    model = model.to(dtype).eval()
    W_e = torch.randn(d_e, N_V, generator=g, dtype=dtype)
    W_p = torch.randn(d_e, ell_max, generator=g, dtype=dtype)
    W_u = None if tied else torch.randn(N_V, d_e, generator=g, dtype=dtype) / d_e**0.5
    z = torch.randint(0, N_V, (ell_z,), generator=g)
    x = torch.randint(0, N_V, (ell_x,), generator=g)
    return model, W_e, W_p, W_u, z, x


def _torch_reference(model, W_e, W_p, W_u, z, x):
    """Algorithm 8's logits with torch doing lines 4-9 and 13-20 on a batch of one sequence."""
    src = (W_e[:, z] + W_p[:, : len(z)]).T[None]  # (1, ℓ_z, d_e): eq. 1, token-major
    tgt = (W_e[:, x] + W_p[:, : len(x)]).T[None]
    if not model.batch_first:
        src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)  # (ℓ, 1, d_e)
    # Additive causal mask: query t may see keys t' ≤ t (eq. 3), -inf above the diagonal.
    mask = torch.triu(torch.full((len(x), len(x)), float("-inf"), dtype=W_e.dtype), diagonal=1)
    with torch.no_grad():
        out = model(src, tgt, tgt_mask=mask)
    X = out[0] if model.batch_first else out[:, 0]  # (ℓ_x, d_e)
    return (W_e.T if W_u is None else W_u) @ X.T  # line 21 before the softmax: (N_V, ℓ_x)


def _drop_final_norms(model):
    """Algorithm 8 has no LayerNorm after the last encoder or decoder layer; torch adds both."""
    model.encoder.norm = None
    model.decoder.norm = None
    return model


def _ours(theta, z, x, eps=fa.EPS):
    # eps always by keyword, so that every call hits the same jit cache entry for its shapes.
    return np.asarray(_logits(jnp.asarray(z.numpy()), jnp.asarray(x.numpy()), theta, eps=eps))


def _random_theta(seed, **hp):
    """θ of Algorithm 8 with every entry random (no γ = 1, no zero bias or β); numpy draws it, so
    no XLA compilation is spent on initialisation."""
    shapes = jax.eval_shape(lambda: fa.init_ed_transformer(jax.random.key(0), **hp))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(1.0 if len(s.shape) == 1 else 0.0, 0.4, s.shape), s.dtype),
        shapes,
    )


def _leaves_identical(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(la, lb, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("shape, dtype", CASES)
def test_algorithm_8_equals_torch_transformer(shape, dtype):
    model, W_e, W_p, W_u, z, x = _reference(shape, dtype)
    _drop_final_norms(model)
    theta = ed_transformer_from_torch(model, W_e, W_p, W_u)
    assert theta.W_e.dtype == {torch.float32: jnp.float32, torch.float64: jnp.float64}[dtype]
    assert (theta.W_u is None) == shape[9]
    expected = _torch_reference(model, W_e, W_p, W_u, z, x).numpy()
    assert expected.shape == (shape[0], shape[8])
    np.testing.assert_allclose(_ours(theta, z, x), expected, rtol=0, atol=TOL[dtype])


def test_public_reference_wrapper_matches():
    model, W_e, W_p, W_u, z, x = _reference(SHAPES[0], torch.float64, seed=3)
    _drop_final_norms(model)
    expected = _torch_reference(model, W_e, W_p, W_u, z, x)
    got = torch_ed_transformer_logits(model, W_e, W_p, W_u, z, x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-12)


def test_final_norms_are_refused_and_would_show():
    model, W_e, W_p, W_u, z, x = _reference(SHAPES[0], torch.float64, seed=1)
    with pytest.raises(
        ValueError, match=r"ed_transformer_from_torch: argument 'model.encoder.norm'"
    ):
        ed_transformer_from_torch(model, W_e, W_p, W_u)
    with_norms = _torch_reference(model, W_e, W_p, W_u, z, x).numpy()
    model.encoder.norm = None
    with pytest.raises(ValueError, match=r"argument 'model.decoder.norm'"):
        ed_transformer_from_torch(model, W_e, W_p, W_u)
    model.decoder.norm = None
    theta = ed_transformer_from_torch(model, W_e, W_p, W_u)
    # The comparison above can fail: the randomised final norms move the logits far beyond TOL.
    assert np.abs(_ours(theta, z, x) - with_norms).max() > 1e-2


@pytest.mark.parametrize("shape, dtype", CASES[:3])
def test_ours_to_torch_matches_and_round_trips(shape, dtype):
    N_V, ell_max, L_enc, L_dec, H, d_e, d_mlp, ell_z, ell_x, tied, _ = shape
    as_jax = {torch.float32: jnp.float32, torch.float64: jnp.float64}[dtype]
    theta = _random_theta(5, N_V=N_V, ell_max=ell_max, L_enc=L_enc, L_dec=L_dec, H=H, d_e=d_e,
                          d_mlp=d_mlp, tied=tied, dtype=as_jax)  # fmt: skip
    state = torch.get_rng_state()
    model = ed_transformer_to_torch(theta, eps=1e-6)
    assert torch.equal(torch.get_rng_state(), state)  # the global torch RNG was not used
    assert model.encoder.norm is None and model.decoder.norm is None and not model.training
    assert all(m.eps == 1e-6 for m in model.modules() if isinstance(m, nn.LayerNorm))
    assert next(model.parameters()).dtype == dtype
    g = torch.Generator().manual_seed(5)
    z, x = (
        torch.randint(0, N_V, (ell_z,), generator=g),
        torch.randint(0, N_V, (ell_x,), generator=g),
    )
    W_e = torch.from_numpy(np.array(theta.W_e))
    W_p = torch.from_numpy(np.array(theta.W_p))
    W_u = None if tied else torch.from_numpy(np.array(theta.W_u))
    expected = _torch_reference(model, W_e, W_p, W_u, z, x).numpy()
    np.testing.assert_allclose(_ours(theta, z, x, eps=1e-6), expected, rtol=0, atol=TOL[dtype])
    _leaves_identical(ed_transformer_from_torch(model, W_e, W_p, W_u, eps=1e-6), theta)


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_to_ours_to_torch_state_dict_identical(batch_first):
    shape = SHAPES[0][:-1] + (batch_first,)
    model, W_e, W_p, W_u, _, _ = _reference(shape, torch.float64, seed=2)
    _drop_final_norms(model)
    back = ed_transformer_to_torch(ed_transformer_from_torch(model, W_e, W_p, W_u),
                                   batch_first=batch_first)  # fmt: skip
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_bias_free_model_converts_with_zero_biases():
    shape = SHAPES[0]
    model, W_e, W_p, W_u, z, x = _reference(shape, torch.float64, seed=6, bias=False)
    _drop_final_norms(model)
    theta = ed_transformer_from_torch(model, W_e, W_p, W_u)
    assert not np.any(np.asarray(theta.enc[0].beta1)) and not np.any(
        np.asarray(theta.dec[0].W_ed.b_q)
    )
    expected = _torch_reference(model, W_e, W_p, W_u, z, x).numpy()
    np.testing.assert_allclose(_ours(theta, z, x), expected, rtol=0, atol=1e-10)


def test_dropout_is_refused_in_training_mode_only():
    model, W_e, W_p, W_u, z, x = _reference(SHAPES[0], torch.float64, seed=7)
    _drop_final_norms(model)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.1
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.1
    model.train()
    with pytest.raises(ValueError, match=r"ed_transformer_from_torch: argument 'model\..*dropout"):
        ed_transformer_from_torch(model, W_e, W_p, W_u)
    model.eval()  # eval mode applies no dropout: the function is Algorithm 8's
    theta = ed_transformer_from_torch(model, W_e, W_p, W_u)
    expected = _torch_reference(model, W_e, W_p, W_u, z, x).numpy()
    np.testing.assert_allclose(_ours(theta, z, x), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(norm_first=True), "norm_first"),
        (dict(activation="gelu"), "activation"),
        (dict(layer_norm_eps=1e-6), "norm1"),  # eps differs from the requested 1e-5
    ],
)
def test_from_torch_refuses_what_algorithm_8_cannot_express(kwargs, argument):
    model, W_e, W_p, W_u, _, _ = _reference(SHAPES[1], seed=8, **kwargs)
    _drop_final_norms(model)
    with pytest.raises(ValueError, match=rf"ed_transformer_from_torch: argument '[^']*{argument}'"):
        ed_transformer_from_torch(model, W_e, W_p, W_u)


def test_from_torch_refuses_wrong_types_and_shapes():
    model, W_e, W_p, W_u, _, _ = _reference(SHAPES[0], seed=9)
    _drop_final_norms(model)
    with pytest.raises(TypeError, match=r"ed_transformer_from_torch: argument 'model'"):
        ed_transformer_from_torch(model.encoder, W_e, W_p, W_u)
    with pytest.raises(ValueError, match=r"ed_transformer_from_torch: argument 'theta.W_u'"):
        ed_transformer_from_torch(model, W_e, W_p, W_u.T)  # (d_e, N_V): wrong orientation


def test_to_torch_refuses_what_torch_cannot_express():
    kw = dict(N_V=20, ell_max=8, L_enc=1, L_dec=1, H=2, d_e=16, d_mlp=16)
    odd_heads = _random_theta(0, d_attn=5, d_mid=8, **kw)
    with pytest.raises(ValueError, match=r"ed_transformer_to_torch: argument 'theta'.*d_e / H"):
        ed_transformer_to_torch(odd_heads)
    no_decoder = _random_theta(0, **{**kw, "L_dec": 0})
    with pytest.raises(ValueError, match=r"ed_transformer_to_torch: argument 'theta'.*decoder"):
        ed_transformer_to_torch(no_decoder)
    theta = _random_theta(0, **kw)
    mixed = theta._replace(W_p=theta.W_p.astype(jnp.float32))  # the rest is float64
    with pytest.raises(TypeError, match=r"ed_transformer_to_torch: argument 'theta' mixes dtypes"):
        ed_transformer_to_torch(mixed)
