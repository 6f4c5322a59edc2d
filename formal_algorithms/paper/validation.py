"""Checks of θ for Algorithms 8-15, in one place: the class each algorithm needs (passed by the
caller), every field's type and number of dimensions, and every shape against the hyperparameters
read off θ (:func:`hyperparameters`). Errors go through :func:`.checks.fail`, naming the algorithm
and the first wrong field by its path (``theta.layers[1].W.W_q``).
"""

import functools

import jax
import jax.numpy as jnp

from .checks import as_tokens, check_tokens, fail
from .initialisation import is_spec
from .parameters import (
    DTransformerParams,
    EDTransformerParams,
    ETransformerParams,
    Layer,
    d_transformer_spec,
    e_transformer_spec,
    ed_transformer_spec,
)


def hyperparameters(theta) -> dict:
    """The hyperparameters of θ (Algorithm 8, 9 or 10), read off its shapes."""
    if type(theta) not in _ALGORITHM_OF:
        fail(
            "hyperparameters",
            "theta",
            f"must be θ of Algorithm 8, 9 or 10, got {_describe(theta)}",
            TypeError,
        )
    d_e, N_V = theta.W_e.shape
    hp = dict(N_V=N_V, ell_max=theta.W_p.shape[1], d_e=d_e, tied=theta.W_u is None)
    if isinstance(theta, EDTransformerParams):
        if not (theta.enc or theta.dec):
            fail("EDTransformerParams", "theta", "has no encoder and no decoder layers")
        first = (theta.enc or theta.dec)[0]
        W = first.W if isinstance(first, Layer) else first.W_dec
        W_mlp = first.W_mlp1 if isinstance(first, Layer) else first.W_mlp3
        hp.update(L_enc=len(theta.enc), L_dec=len(theta.dec))
    elif isinstance(theta, (ETransformerParams, DTransformerParams)):
        if not theta.layers:
            fail(type(theta).__name__, "theta.layers", "is empty; L must be at least 1")
        W, W_mlp = theta.layers[0].W, theta.layers[0].W_mlp1
        hp.update(L=len(theta.layers))
        if isinstance(theta, ETransformerParams):
            hp.update(d_f=theta.W_f.shape[0])
    H, d_attn, _ = W.W_q.shape
    hp.update(H=H, d_mlp=W_mlp.shape[0], d_attn=d_attn, d_mid=W.W_v.shape[1])
    return hp


_SPEC = {
    EDTransformerParams: ed_transformer_spec,
    ETransformerParams: e_transformer_spec,
    DTransformerParams: d_transformer_spec,
}


@functools.lru_cache(maxsize=64)
def _expected_shapes(kind, hp_items):
    spec = _SPEC[kind](**dict(hp_items))
    return jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_spec)


_ALGORITHM_OF = {EDTransformerParams: 8, ETransformerParams: 9, DTransformerParams: 10}


def _describe(value, expected=None) -> str:
    """A short description of a wrong argument (never a tree dump)."""
    if isinstance(value, type):  # an expected class
        n = _ALGORITHM_OF.get(value)
        return f"{value.__name__} (θ of Algorithm {n})" if n else value.__name__
    if isinstance(value, dict):
        text = f"a plain dict with keys {sorted(map(str, value))[:8]}"
        if expected is not None and hasattr(expected, "_fields"):
            missing = [f for f in expected._fields if f not in value]
            text += f" (missing {missing})" if missing else ""
            text += f"; build it with {expected.__name__}(**theta)"
        return text
    if type(value) in _ALGORITHM_OF:
        return _describe(type(value))
    if hasattr(value, "_fields"):
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    if value is None:
        return "None"
    return f"{type(value).__name__} {str(value)[:40]!r}"


@functools.lru_cache(maxsize=8)
def _template(kind):
    """θ's structure with one layer of every kind, all sizes 1: the expected type and number of
    dimensions of every field."""
    hp = dict(N_V=3, ell_max=1, H=1, d_e=1, d_mlp=1)
    hp.update(dict(L_enc=1, L_dec=1) if kind is EDTransformerParams else dict(L=1))
    return _SPEC[kind](**hp)


def _check_node(algorithm, path, node, template):
    """Field by field against ``template``: the first wrong field is named by its path."""
    cls = type(template)
    if type(node) is not cls:
        fail(algorithm, path, f"must be a {cls.__name__}, got {_describe(node, cls)}", TypeError)
    for name, value, t in zip(cls._fields, node, template, strict=True):
        where = f"{path}.{name}"
        if isinstance(t, tuple) and not hasattr(t, "_fields"):  # the layers
            if type(value) is not tuple:
                fail(
                    algorithm,
                    where,
                    f"must be a tuple of {type(t[0]).__name__} (one per "
                    f"layer), got {_describe(value)}",
                    TypeError,
                )
            for i, layer in enumerate(value):
                _check_node(algorithm, f"{where}[{i}]", layer, t[0])
        elif not is_spec(t):  # a nested parameter set (MHAttentionParams)
            _check_node(algorithm, where, value, t)
        elif value is None and name == "W_u":  # tied to W_eᵀ
            continue
        elif not (hasattr(value, "shape") and hasattr(value, "dtype")):
            fail(
                algorithm,
                where,
                f"must be an array with {len(t.shape)} dimensions, got {_describe(value)}",
                TypeError,
            )
        elif len(value.shape) != len(t.shape):
            fail(
                algorithm,
                where,
                f"has shape {tuple(value.shape)}, expected {len(t.shape)} dimensions",
            )


def _check_leaves(algorithm, actual, expected, hp):
    """Every leaf of θ a float array of the shape the spec gives for the hyperparameters ``hp``."""
    for (path, a), (_, e) in zip(actual, expected, strict=True):
        name = "theta" + jax.tree_util.keystr(path)
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            fail(
                algorithm,
                name,
                f"has dtype {jnp.result_type(a)}, expected a float dtype",
                TypeError,
            )
        if jnp.shape(a) != e.shape:
            fail(algorithm, name, f"has shape {jnp.shape(a)}, expected {e.shape} for {hp}")


def check_params(theta, algorithm: str | None = None, expected=None, **hp) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first field of θ that is wrong: θ of another
    algorithm, a plain dict or tuple, a list where a tuple of layers belongs, a missing array, or
    a leaf whose shape does not fit the hyperparameters.

    ``expected``: the parameter class ``algorithm`` needs (:class:`.parameters.DTransformerParams`
    for Algorithms 10, 13 and 14; ``ETransformerParams`` for 9 and 12; ``EDTransformerParams`` for
    8, 11 and 15), or ``None`` for any of the three. The hyperparameters are read off θ
    (:func:`hyperparameters`) and may be overridden by keyword (``check_params(theta, d_e=64)``
    asserts d_e too). Cheap: compares types and shapes only.
    """
    kind = type(theta)
    if expected is not None and kind is not expected:
        fail(
            algorithm or "check_params",
            "theta",
            f"must be {_describe(expected)}, got {_describe(theta, expected)}",
            TypeError,
        )
    if kind not in _SPEC:
        fail(
            algorithm or "check_params",
            "theta",
            "must be θ of Algorithm 8, 9 or 10 "
            f"(EDTransformerParams, ETransformerParams, DTransformerParams), got "
            f"{_describe(theta)}",
            TypeError,
        )
    algorithm = algorithm or kind.__name__
    _check_node(algorithm, "theta", theta, _template(kind))
    try:
        read = hyperparameters(theta)
    except (AttributeError, TypeError, ValueError) as error:  # a field missing or not an array
        fail(
            algorithm,
            "theta",
            f"has structure {jax.tree_util.tree_structure(theta)}, which "
            f"is not a complete {kind.__name__} ({error})",
        )
    expected_hp = {**read, **hp}
    if expected_hp["tied"] and expected_hp.get("d_f", expected_hp["d_e"]) != expected_hp["d_e"]:
        fail(algorithm, "theta.W_u", "is None (tied to W_eᵀ), which needs d_f = d_e")
    expected, expected_tree = _expected_shapes(kind, tuple(sorted(expected_hp.items())))
    actual, actual_tree = jax.tree_util.tree_flatten_with_path(theta)
    if expected_tree != actual_tree:
        fail(
            algorithm,
            "theta",
            f"has structure {actual_tree}, expected {expected_tree} for {expected_hp}",
        )
    _check_leaves(algorithm, actual, expected, expected_hp)


def check_inputs(theta, algorithm, expected, **sequences):
    """:func:`check_params` (θ of class ``expected``), then each token sequence (a list or tuple
    is taken as an array); returns the sequences as arrays, in order."""
    check_params(theta, algorithm, expected)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    out = []
    for name, x in sequences.items():
        x = as_tokens(x)
        check_tokens(algorithm, name, x, N_V, ell_max)
        out.append(x)
    return out
