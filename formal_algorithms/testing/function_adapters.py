"""JAX callables, Equinox and Flax modules, plain functions and this library's own
``x (ℓ,) ↦ logits (N_V, ℓ)`` as :class:`.token_model.TokenModel`: gradients by ``jax.jacrev``, or
finite differences for a plain callable."""

from __future__ import annotations

import numpy as np

from ..paper.checks import check_count, fail
from .token_model import (
    DEFAULT_SETTINGS,
    NotSupported,
    TokenModel,
    accepted_arguments,
    check_options,
)

# ====================================================================================== JAX


class _FunctionModel(TokenModel):
    def __init__(
        self,
        fn,
        where,
        *,
        batched,
        name,
        embed,
        from_embeddings,
        framework,
        columns=False,
        cached=None,
        **settings,
    ):
        """``settings``: :meth:`TokenModel._configure`'s (kind, vocab_size, pad_token_id, …)."""
        if not callable(fn):
            fail(where, "fn", f"must be callable, got {type(fn).__name__}", TypeError)
        if (embed is None) != (from_embeddings is None):
            fail(where, "embed", "and from_embeddings go together: give both or neither")
        self.fn, self.batched, self.columns, self.framework = fn, batched, columns, framework
        self._configure(where, name=name or getattr(fn, "__name__", type(fn).__name__), **settings)
        accepted = accepted_arguments(fn)
        self.accepts_attention_mask = "attention_mask" in accepted
        self.accepts_position_ids = "position_ids" in accepted
        if self.kind == "seq2seq" and "z" not in accepted:
            fail(where, "fn", "must take the context as z= for kind='seq2seq'", TypeError)
        self.embed, self.from_embeddings = embed, from_embeddings
        if cached is not None and not callable(cached):
            fail(where, "cached", f"must be callable, got {type(cached).__name__}", TypeError)
        self.cached, self.has_cache = cached, cached is not None
        if embed is not None:
            self.gradient = "jax.jacrev" if framework == "jax" else "finite differences"

    def _call_one(self, fn, x, kw):
        out = np.asarray(fn(x, **kw))
        return out.T if self.columns else out

    def _forward(self, x, attention_mask, position_ids, z, z_mask):
        kwargs = {}
        for key, value, ok in (
            ("attention_mask", attention_mask, self.accepts_attention_mask),
            ("position_ids", position_ids, self.accepts_position_ids),
        ):
            if value is not None:
                if not ok:
                    raise NotSupported(f"{self.name} takes no {key}")
                kwargs[key] = np.asarray(value)
        if z is not None:
            kwargs["z"] = np.asarray(z)
            if z_mask is not None:
                kwargs["z_mask"] = np.asarray(z_mask)
        if self.batched:
            return np.asarray(self.fn(x, **kwargs))
        rows = []
        for b in range(x.shape[0]):
            one = {k: v[b] for k, v in kwargs.items()}
            rows.append(self._call_one(self.fn, x[b], one))
        return np.stack(rows)

    def _cached_forward(self, x, cache, z, z_mask):
        if self.cached is None:
            raise NotSupported(f"{self.name} has no cache (give cached=)")
        states = [None] * x.shape[0] if cache is None else cache
        outs, new = [], []
        for b in range(x.shape[0]):
            kw = {} if z is None else {"z": np.asarray(z)[b]}
            out, state = self.cached(x[b], states[b], **kw)
            outs.append(np.asarray(out).T if self.columns else np.asarray(out))
            new.append(state)
        return np.stack(outs), new

    def _influence(self, x, attention_mask, position_ids, z, z_mask):
        if self.embed is None:
            raise NotSupported(
                f"{self.name}: no gradients without embed= and from_embeddings= (token ids are "
                "discrete); the perturbation checks still run"
            )
        if attention_mask is not None or position_ids is not None or z is not None:
            raise NotSupported(f"{self.name}: the embedding split takes token ids only")
        r = np.random.default_rng(0).normal(size=self.vocab_size)
        out = []
        for b in range(x.shape[0]):
            E = np.asarray(self.embed(x[b]), np.float64)  # (ℓ, d)
            if self.gradient == "jax.jacrev":
                out.append(self._jax_influence(E, r))
            else:
                out.append(self._fd_influence(E, r))
        return np.stack(out)

    def _project(self, E, r):
        logits = self.from_embeddings(E)
        logits = logits.T if self.columns else logits  # (ℓ, N_V)
        return logits @ r

    def _jax_influence(self, E, r):
        import jax
        import jax.numpy as jnp

        E = jnp.asarray(E)
        J = jax.jit(jax.jacrev(lambda E: self._project(E, jnp.asarray(r, E.dtype))))(E)
        return np.abs(np.asarray(J, np.float64)).sum(-1)  # (ℓ_out, ℓ_in)

    def _fd_influence(self, E, r):
        rng = np.random.default_rng(1)
        h = 1e-3 * (1 + np.abs(E).max())
        ell = E.shape[0]
        influence = np.zeros((ell, ell))
        for s in range(ell):
            u = rng.normal(size=E.shape[1])
            dE = np.zeros_like(E)
            dE[s] = h * u / np.linalg.norm(u)
            plus = np.asarray(self._project(E + dE, r), np.float64)
            minus = np.asarray(self._project(E - dE, r), np.float64)
            influence[:, s] = np.abs(plus - minus) / (2 * h)
        return influence


# the adapter's own options and their defaults; every other keyword is a setting
ADAPTER_OPTIONS = dict(
    batched=True, name=None, embed=None, from_embeddings=None, columns=False, cached=None
)


def _function_model(fn, where, framework, **options):
    check_options(where, options, ("vocab_size", *ADAPTER_OPTIONS))
    adapter = {k: options.pop(k, default) for k, default in ADAPTER_OPTIONS.items()}
    return _FunctionModel(fn, where, framework=framework, **adapter, **DEFAULT_SETTINGS | options)


def from_callable(fn, *, vocab_size: int, **options) -> TokenModel:
    """Any function from token ids to logits: ``fn(ids (B, ℓ)) → (B, ℓ, N_V)`` (``batched=False``:
    ``fn(ids (ℓ,)) → (ℓ, N_V)``, called per example). ``attention_mask=``/``position_ids=`` are
    passed when ``fn`` names them; an encoder-decoder takes the context as ``z=`` (and ``z_mask=``).

    Gradients, when ``embed(ids (ℓ,)) → E (ℓ, d)`` and ``from_embeddings(E) → (ℓ, N_V)`` split the
    model at its embedding: central finite differences (:meth:`TokenModel.influence`).
    A cache, when ``cached(new_ids (n,), state) → (logits (n, N_V), state)`` decodes one example's
    next n tokens after those its opaque ``state`` holds (``state`` is None at the start).
    Options: ``kind``, ``batched``, ``pad_token_id``, ``special_ids``, ``max_length``, ``output``,
    ``positions``, ``name``, ``embed``, ``from_embeddings``, ``cached``.
    """
    return _function_model(fn, "from_callable", "callable", vocab_size=vocab_size, **options)


def from_jax(fn, *, vocab_size: int, **options) -> TokenModel:
    """A JAX function from token ids to logits, as :func:`from_callable`, with exact gradients by
    ``jax.jacrev`` of ``from_embeddings`` when the embedding split is given."""
    return _function_model(fn, "from_jax", "jax", vocab_size=vocab_size, **options)


def from_equinox(model, *, vocab_size: int, **options) -> TokenModel:
    """An Equinox module called on one example, ``model(ids (ℓ,)) → (ℓ, N_V)`` (Equinox's
    convention: no batch axis): :func:`from_jax` with ``batched=False``."""
    options.setdefault("batched", False)
    options.setdefault("name", type(model).__name__)
    return _function_model(model, "from_equinox", "jax", vocab_size=vocab_size, **options)


def from_flax(module, variables, *, vocab_size: int, **options) -> TokenModel:
    """A Flax Linen module and its variables: ``module.apply(variables, ids (B, ℓ), **kw)``
    ``→ (B, ℓ, N_V)`` (a Flax NNX module is a plain callable: use :func:`from_jax`).
    ``attention_mask=``/``position_ids=`` are passed when ``options`` says the module takes them:
    ``accepts=("attention_mask", "position_ids")``."""
    if not callable(getattr(module, "apply", None)):
        fail(
            "from_flax",
            "module",
            "must have .apply(variables, ids) (a Flax Linen module)",
            TypeError,
        )
    accepts = tuple(options.pop("accepts", ()))
    options.setdefault("name", type(module).__name__)

    def fn(ids, attention_mask=None, position_ids=None, z=None, z_mask=None):
        kw = {
            k: v
            for k, v in (
                ("attention_mask", attention_mask),
                ("position_ids", position_ids),
                ("z", z),
                ("z_mask", z_mask),
            )
            if v is not None
        }
        return module.apply(variables, ids, **kw)

    model = _function_model(fn, "from_flax", "jax", vocab_size=vocab_size, **options)
    model.accepts_attention_mask = "attention_mask" in accepts
    model.accepts_position_ids = "position_ids" in accepts
    return model


def from_paper(fn, *, N_V: int, kind: str = "causal", **options) -> TokenModel:
    """A function of this library's orientation, one sequence to columns: ``fn(x (ℓ,)) →
    (N_V, ℓ)``, e.g. ``lambda x: d_transformer_logits(x, theta)`` (Algorithm 10) or, with
    ``kind="seq2seq"``, ``lambda x, z: ed_transformer_logits(z, x, theta)``. ``embed``/
    ``from_embeddings`` may split it (``E`` is then ``(d_e, ℓ)``, the paper's X; transposed here);
    ``cached(new_x (n,), state) → (logits (N_V, n), state)`` gives it a cache (state None at
    first), e.g. around :func:`~formal_algorithms.practice.cache.d_cached_logits`."""
    check_count("from_paper", "N_V", N_V, 2)  # named as the caller typed it, not vocab_size
    embed, from_embeddings = options.pop("embed", None), options.pop("from_embeddings", None)
    if embed is not None and from_embeddings is not None:
        inner_embed, inner_from = embed, from_embeddings

        def embed(x):
            return inner_embed(x).T

        def from_embeddings(E):
            return inner_from(E.T)

    options.setdefault("name", getattr(fn, "__name__", "paper"))
    return _function_model(
        fn,
        "from_paper",
        "jax",
        vocab_size=N_V,
        kind=kind,
        batched=False,
        columns=True,
        embed=embed,
        from_embeddings=from_embeddings,
        **options,
    )
