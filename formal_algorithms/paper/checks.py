"""Eager input checks shared by every public entry point.

JAX clamps out-of-range gathers and broadcasts silently, so a wrong token id or a wrong shape
gives a plausible-looking result instead of an error. These checks run on concrete inputs
(eager calls); under ``jit``/``vmap`` the values are abstract and only shapes can be checked.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x):
    """``x`` as a numpy array, or ``None`` if it is an abstract value inside a transformation."""
    try:
        return np.asarray(x)
    except Exception:  # jax.errors.TracerArrayConversionError and relatives
        return None


def fail(algorithm: str, argument: str, message: str, error=ValueError):
    raise error(f"{algorithm}: argument {argument!r} {message}")


def check_shape(algorithm: str, argument: str, x, shape: tuple) -> None:
    """``shape`` may contain ``None`` for a free dimension."""
    actual = tuple(np.shape(x))
    if len(actual) != len(shape) or any(
        e is not None and e != a for e, a in zip(shape, actual, strict=True)
    ):
        dims = ["*" if e is None else str(e) for e in shape]
        expected = f"({dims[0]},)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"
        fail(algorithm, argument, f"has shape {actual}, expected {expected}")


def check_tokens(algorithm: str, argument: str, x, N_V: int, ell_max: int | None = None) -> None:
    """A token sequence: 1-D, integer, non-empty, ids in [0, N_V), length <= ell_max."""
    if np.ndim(x) != 1:
        fail(algorithm, argument, f"must be a 1-D token sequence, got shape {np.shape(x)}")
    ell = np.shape(x)[0]
    if ell == 0:
        fail(algorithm, argument, "is empty; the algorithm needs at least one token")
    dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
    if not np.issubdtype(dtype, np.integer):
        fail(algorithm, argument, f"must hold integer token ids, got dtype {dtype}", TypeError)
    if ell_max is not None and ell > ell_max:
        fail(algorithm, argument, f"has length {ell} > ell_max = {ell_max}")
    values = concrete(x)
    if values is not None and (values.min() < 0 or values.max() >= N_V):
        bad = values[(values < 0) | (values >= N_V)]
        fail(algorithm, argument, f"holds token ids {bad[:5].tolist()} outside [0, N_V = {N_V})")


def check_index(algorithm: str, argument: str, i, size: int) -> None:
    values = concrete(i)
    if values is None:
        return
    if not np.issubdtype(values.dtype, np.integer):
        fail(algorithm, argument, f"must be an integer index, got dtype {values.dtype}", TypeError)
    if np.any(values < 0) or np.any(values >= size):
        fail(algorithm, argument, f"= {values.tolist()} is outside [0, {size})")


def check_mask(algorithm: str, mask, ell_z: int, ell_x: int, argument: str = "Mask") -> None:
    check_shape(algorithm, argument, mask, (ell_z, ell_x))
    _check_boolean(algorithm, argument, mask)


def check_valid(algorithm: str, argument: str, valid, ell: int) -> None:
    """A padding vector: ``None`` (no padding) or ``(ℓ,)`` boolean (or 0/1), True at real tokens."""
    if valid is not None:
        check_shape(algorithm, argument, valid, (ell,))
        _check_boolean(algorithm, argument, valid)


def _check_boolean(algorithm, argument, x):
    dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
    if dtype != np.bool_:
        values = concrete(x)
        if values is None or not np.isin(values, (0, 1)).all():
            fail(algorithm, argument, f"must be boolean or 0/1, got dtype {dtype}", TypeError)


def check_key(algorithm, key):
    """A key is a typed PRNG key array of shape () or a raw uint32 key of shape (2,)."""
    try:
        key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    except (TypeError, ValueError):
        fail(
            algorithm,
            "key",
            f"must be one jax.random key (jax.random.key(...)), got {key!r}",
            TypeError,
        )
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not (typed and key.shape == ()) and not (key.dtype == jnp.uint32 and key.shape == (2,)):
        fail(
            algorithm,
            "key",
            f"must be one jax.random key (jax.random.key(...) or PRNGKey(...)), got "
            f"dtype {key.dtype} shape {key.shape}",
            TypeError,
        )


def check_count(algorithm, name, n, minimum=0):
    if isinstance(n, (bool, np.bool_)):
        fail(algorithm, name, f"must be an integer, got {n!r}", TypeError)
    try:
        n = operator.index(n)
    except TypeError:
        fail(algorithm, name, f"must be an integer, got {n!r}", TypeError)
    if n < minimum:
        fail(algorithm, name, f"= {n} must be at least {minimum}")
    return n


def as_tokens(x):
    """A token sequence given as a Python list or tuple, as an array (arrays and tracers pass
    unchanged), so that every algorithm accepts the same inputs."""
    return jnp.asarray(np.asarray(x)) if isinstance(x, (list, tuple)) else x


def check_token_dtype(algorithm: str, argument: str, x, N_V: int) -> None:
    """An integer dtype that holds every id the algorithm may produce (up to N_V − 1)."""
    dtype = np.dtype(x.dtype)
    if np.issubdtype(dtype, np.integer) and np.iinfo(dtype).max < N_V - 1:
        fail(
            algorithm,
            argument,
            f"has dtype {dtype}, which cannot hold the generated token ids up to N_V - 1 = "
            f"{N_V - 1}; pass the prompt as int32",
            TypeError,
        )


def check_eps(algorithm: str, eps) -> None:
    """Layer norm's ε: a finite real number >= 0 (a traced ε is not checked)."""
    if isinstance(eps, jax.core.Tracer):
        return
    if isinstance(eps, (bool, np.bool_, str, bytes)) or np.ndim(eps) != 0:
        fail(algorithm, "eps", f"must be a real number >= 0, got {eps!r}", TypeError)
    if not (np.isfinite(float(eps)) and float(eps) >= 0):
        fail(algorithm, "eps", f"must be a finite number >= 0, got {eps!r}")


def check_activation(algorithm: str, activation, eps) -> None:
    """``activation`` a function (e.g. ``gelu``, not the string ``"gelu"``) and ε (:func:`check_eps`)."""
    if not callable(activation):
        fail(
            algorithm,
            "activation",
            f"must be a function such as formal_algorithms.gelu, got {activation!r}",
            TypeError,
        )
    check_eps(algorithm, eps)


def check_sizes(algorithm: str, minimum: int = 1, **sizes) -> None:
    """Hyperparameters that are sizes: integers (not bool) >= ``minimum``; ``None`` is skipped."""
    for name, n in sizes.items():
        if n is not None:
            check_count(algorithm, name, n, minimum)
