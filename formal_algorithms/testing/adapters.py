"""Adapters: anyone's transformer as a :class:`TokenModel`, the one interface that the conformance
checks of :mod:`formal_algorithms.testing.conformance` take.

A :class:`TokenModel` maps token ids to logits. Inputs are batch-first integer arrays ``(B, ℓ)``
(what every framework takes); outputs are float64 numpy arrays in the paper's orientation,
``(B, N_V, ℓ)``: example b's column t is the output at position t (``P[:, t]`` of Algorithms 8-10,
before or after the softmax; see ``output``).

- :func:`from_torch`: any ``torch.nn.Module`` whose ``forward`` follows Hugging Face's calling
  convention (``input_ids``, optionally ``attention_mask``, ``position_ids``, a cache under
  ``cache``/``past_key_values`` with ``use_cache``; encoder-decoders take ``decoder_input_ids``).
  It returns a tensor, a tuple whose first item is the logits, or an object with ``.logits``.
- :func:`from_hf`: a Hugging Face causal LM, masked LM or encoder-decoder (a model or a local
  directory; nothing is downloaded); ``generate`` is the model's own.
- :func:`from_jax`, :func:`from_equinox`, :func:`from_flax`: JAX callables and modules.
- :func:`from_callable`: any function from token ids to logits (numpy, JAX, anything).
- :func:`from_paper`: a function of this library's orientation, ``x (ℓ,) ↦ logits (N_V, ℓ)``.

Frameworks are imported lazily: this module needs only numpy and JAX until you pass it a torch
model. Gradient-based checks use the framework's own autograd (``torch.autograd``, ``jax.jacrev``);
a plain callable gets the documented finite-difference fallback (:meth:`TokenModel.influence`).
"""

from __future__ import annotations

import inspect

import numpy as np

from ..paper.checks import fail

__all__ = [
    "KINDS",
    "OUTPUTS",
    "NotSupported",
    "TokenModel",
    "from_callable",
    "from_equinox",
    "from_flax",
    "from_hf",
    "from_jax",
    "from_paper",
    "from_torch",
]

KINDS = ("causal", "masked", "seq2seq")
OUTPUTS = ("logits", "log_probs", "probs")


class NotSupported(Exception):
    """The model cannot do what a check needs (no cache, no gradients, …): the check is skipped."""


_bad = fail  # the one error helper (formal_algorithms.paper.checks): "<where>: argument '<a>' …"


def _accepted(fn) -> set[str]:
    """The keyword arguments ``fn`` names explicitly (``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _int_array(x, where: str, argument: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0 or not np.issubdtype(x.dtype, np.integer):
        _bad(
            where,
            argument,
            f"must be integer token ids of shape (B, ℓ) with ℓ ≥ 1, got {x.dtype} {x.shape}",
        )
    return x


# ================================================================================ the interface


class TokenModel:
    """A model from token ids to logits, as the conformance checks see it.

    Attributes (set by the ``from_*`` constructors):

    - ``name``; ``framework`` (``"torch"``, ``"hf"``, ``"jax"``, ``"callable"``);
    - ``kind``: ``"causal"`` (a decoder: Algorithm 10), ``"masked"`` (a bidirectional encoder:
      Algorithm 9) or ``"seq2seq"`` (an encoder-decoder: Algorithm 8; the decoder reads ``x``, the
      encoder the context ``z``);
    - ``vocab_size`` (N_V), ``pad_token_id``, ``special_ids`` (never drawn as input tokens),
      ``max_length`` (the longest input, or None), ``sliding_window`` (keys further back than
      this are not read, or None; from Hugging Face configs);
    - ``output``: what the model returns, ``"logits"``, ``"log_probs"`` or ``"probs"``;
    - ``positions``: whether the outputs depend on token positions (False enables the permutation
      checks; None means unknown and is treated as True);
    - ``accepts_attention_mask``, ``accepts_position_ids``, ``has_cache``, ``can_generate``,
      ``has_own_generate`` (the model's ``generate`` is used instead of this module's loop);
    - ``gradient``: how :meth:`influence` differentiates (``"torch.autograd"``, ``"jax.jacrev"``,
      ``"finite differences"``) or None.
    """

    name = "model"
    framework = "callable"
    kind = "causal"
    vocab_size = 0
    pad_token_id = 0
    special_ids: tuple[int, ...] = ()
    max_length: int | None = None
    sliding_window: int | None = None
    output = "logits"
    positions: bool | None = None
    accepts_attention_mask = False
    accepts_position_ids = False
    has_cache = False
    has_own_generate = False
    can_generate = True
    gradient: str | None = None

    def _configure(
        self,
        where,
        *,
        kind,
        vocab_size,
        pad_token_id,
        special_ids,
        max_length,
        output,
        positions,
        name,
    ):
        if kind not in KINDS:
            _bad(where, "kind", f"must be one of {KINDS}, got {kind!r}")
        if output not in OUTPUTS:
            _bad(where, "output", f"must be one of {OUTPUTS}, got {output!r}")
        if not isinstance(vocab_size, int | np.integer) or vocab_size < 2:
            _bad(where, "vocab_size", f"must be an integer ≥ 2, got {vocab_size!r}")
        self.kind, self.vocab_size, self.output = kind, int(vocab_size), output
        self.pad_token_id = int(pad_token_id)
        self.special_ids = tuple(sorted({int(i) for i in special_ids if i is not None}))
        self.max_length, self.positions, self.name = max_length, positions, name
        self.can_generate = kind != "masked"

    # ---- what each adapter provides ----------------------------------------------------------

    def _forward(self, x, attention_mask, position_ids, z, z_mask):
        """Logits ``(B, ℓ, N_V)`` in any array type."""
        raise NotImplementedError

    def _cached_forward(self, x, cache, z, z_mask):
        """``(logits (B, ℓ_new, N_V), new cache)``: the new tokens after the cached ones."""
        raise NotSupported(f"{self.name} has no key-value cache")

    def _influence(self, x, attention_mask, position_ids, z, z_mask):
        raise NotSupported(f"{self.name}: no gradients (give an embedding split; see influence)")

    def _own_generate(self, x, n, *, use_cache, sample, seed, z, z_mask, attention_mask):
        """The model's own generation (Hugging Face's ``generate``), or None to use the loop."""
        return None

    # ---- the public methods ----------------------------------------------------------------------

    def logits(self, x, *, attention_mask=None, position_ids=None, z=None, z_mask=None):
        """Outputs ``(B, N_V, ℓ)`` float64 for token ids ``x`` ``(B, ℓ)`` (or ``(ℓ,)``).

        ``attention_mask`` (``(B, ℓ)``, 1 = real token, 0 = padding) and ``position_ids`` are
        passed only when not None; ``z``/``z_mask`` are the context and its mask (seq2seq).
        """
        x = _int_array(x, f"{self.name}.logits")
        if self.kind == "seq2seq" and z is None:
            _bad(f"{self.name}.logits", "z", "is required for an encoder-decoder (the context)")
        out = _outputs(self._forward(x, attention_mask, position_ids, z, z_mask), self.name)
        expected = (*x.shape, self.vocab_size)
        if out.shape != expected:
            _bad(
                self.name,
                "output",
                f"has shape {out.shape}; expected (B, ℓ, N_V) = {expected} "
                f"(N_V = vocab_size = {self.vocab_size})",
            )
        return np.transpose(out, (0, 2, 1))

    def cached_logits(self, x, chunks, *, z=None):
        """Outputs ``(B, N_V, ℓ)`` computed through the model's cache: the first ``chunks[0]``
        tokens in one call (prefill), then ``chunks[1]`` tokens, … (the rest one at a time)."""
        x = _int_array(x, f"{self.name}.cached_logits")
        columns, cache, start = [], None, 0
        sizes = list(chunks) + [1] * x.shape[1]
        for size in sizes:
            if start >= x.shape[1]:
                break
            out, cache = self._cached_forward(x[:, start : start + size], cache, z, None)
            columns.append(_numpy(out))
            start += size
        return np.transpose(np.concatenate(columns, axis=1), (0, 2, 1))

    def influence(self, x, *, attention_mask=None, position_ids=None, z=None, z_mask=None):
        """``I[b, t, s] = Σ_i |∂ (r · out[b, :, t]) / ∂ e_s[i]|``: how much input position s (its
        token embedding ``e_s``) moves output position t, along a fixed random direction r of the
        outputs; shape ``(B, ℓ, ℓ)``.

        Torch models use ``torch.autograd`` (the embedding layer's output is made a leaf by a
        forward hook); JAX models ``jax.jacrev`` of ``from_embeddings``; a plain callable with an
        embedding split uses central finite differences: for each input position s, the
        embeddings move by ``±h·u_s`` (a random unit direction, ``h = 1e-3·(1 + max |E|)``) and
        ``|r · (f(E + h u_s) − f(E − h u_s))| / 2h`` is the influence (exact zeros stay zeros;
        rounding leaves ~1e-13 in float64, so the checks compare to a threshold for this method).
        """
        x = _int_array(x, f"{self.name}.influence")
        return np.asarray(self._influence(x, attention_mask, position_ids, z, z_mask), np.float64)

    def generate(
        self,
        x,
        n,
        *,
        use_cache=True,
        sample=False,
        seed=0,
        z=None,
        z_mask=None,
        attention_mask=None,
        return_logits=False,
    ):
        """``x`` followed by ``n`` generated tokens ``(B, ℓ + n)`` (greedy, or sampled under
        ``seed``): the model's own ``generate`` when it has one (Hugging Face), else this loop:
        each step feeds the whole sequence (``use_cache=False``) or only the new token with the
        cache (``use_cache=True``), and picks the argmax, or samples the softmax of the last column
        by inverse CDF with ``numpy.random.default_rng(seed)``. With ``attention_mask`` (left
        padding) the loop passes position ids ``cumsum(mask) − 1`` and extends the mask.

        ``return_logits=True``: ``(tokens, logits)``, the raw outputs each step chose from,
        ``(B, n, N_V)`` (Hugging Face's ``output_logits``), or None when the model's own
        ``generate`` cannot give them."""
        x = _int_array(x, f"{self.name}.generate")
        own = self._own_generate(
            x,
            n,
            use_cache=use_cache,
            sample=sample,
            seed=seed,
            z=z,
            z_mask=z_mask,
            attention_mask=attention_mask,
        )
        if own is not None:
            tokens, logits = own
            return (np.asarray(tokens), logits) if return_logits else np.asarray(tokens)
        rng = np.random.default_rng(seed)
        cache, mask = None, None if attention_mask is None else np.asarray(attention_mask)
        steps = []
        for step in range(n):
            if use_cache and mask is None:
                new = x if cache is None else x[:, -1:]
                out, cache = self._cached_forward(new, cache, z, z_mask)
                last = _numpy(out)[:, -1, :]
            else:
                if use_cache and not self.has_cache:
                    raise NotSupported(f"{self.name} has no key-value cache")
                kwargs = {}
                if mask is not None:
                    kwargs["attention_mask"] = mask
                    if self.accepts_position_ids:
                        kwargs["position_ids"] = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
                last = self.logits(x, z=z, z_mask=z_mask, **kwargs)[:, :, -1]
            steps.append(np.asarray(last, np.float64))
            token = _choose(last, self.output, rng if sample else None)
            x = np.concatenate([x, token[:, None]], axis=1)
            if mask is not None:
                mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)
            del step
        return (x, np.stack(steps, axis=1)) if return_logits else x

    def as_function(self, z=None):
        """The model as a function of the paper's orientation, one sequence ``x (ℓ,)`` to its
        columns ``(N_V, ℓ)`` (the decoder's, with the context ``z`` fixed, for an encoder-decoder):
        what the checkers of :mod:`~formal_algorithms.testing.invariants` take, e.g.
        ``check_causal_tokens(model.as_function(), x, N_V)``."""
        context = None if z is None else np.asarray(z)[None]

        def f(x):
            return self.logits(np.asarray(x)[None], z=context)[0]

        return f

    def __repr__(self):
        return f"<TokenModel {self.name!r}: {self.kind}, {self.framework}, N_V={self.vocab_size}>"


def _choose(last, output, rng):
    """Greedy (rng None) or inverse-CDF sampling from the last column's distribution."""
    last = np.asarray(last, np.float64)
    if output == "probs":
        logp = np.log(np.maximum(last, 1e-300))
    else:
        logp = last - last.max(axis=-1, keepdims=True)
    if rng is None:
        return np.argmax(logp, axis=-1)
    p = np.exp(logp - logp.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    u = rng.random(len(cdf))
    return np.minimum((cdf < u[:, None]).sum(axis=-1), last.shape[-1] - 1)


def _outputs(raw, name) -> np.ndarray:
    """The model's raw output as float64 numpy, or a one-line error naming what it returned."""
    kind = getattr(getattr(raw, "dtype", None), "kind", "")
    if isinstance(raw, str | bytes) or raw is None or kind in ("U", "S"):
        what = f"{type(raw).__name__} {str(raw)[:40]!r}"
        _bad(name, "output", f"is {what}; expected an array of logits (B, ℓ, N_V)", TypeError)
    try:
        return _numpy(raw)
    except (TypeError, ValueError) as error:
        _bad(
            name, "output", f"({type(raw).__name__}) is not an array of numbers: {error}", TypeError
        )


def _numpy(a) -> np.ndarray:
    """Any framework's array as float64 numpy (torch tensors detached, bfloat16 via float32)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        a = a.float() if a.is_floating_point() else a
        a = a.numpy()
    return np.asarray(a, np.float64)


# ===================================================================================== torch


def _torch():
    import torch

    return torch


class _TorchModel(TokenModel):
    framework = "torch"

    def __init__(
        self,
        module,
        where,
        *,
        kind,
        vocab_size,
        pad_token_id,
        special_ids,
        max_length,
        output,
        positions,
        name,
        embedding,
    ):
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            _bad(
                where,
                "module",
                f"must be a torch.nn.Module, got {type(module).__name__}",
                TypeError,
            )
        self.module = module
        self._configure(
            where,
            kind=kind,
            vocab_size=vocab_size,
            pad_token_id=pad_token_id,
            special_ids=special_ids,
            max_length=max_length,
            output=output,
            positions=positions,
            name=name or type(module).__name__,
        )
        accepted = _accepted(module.forward)
        self._accepted = accepted
        self.accepts_attention_mask = "attention_mask" in accepted
        self.accepts_position_ids = "position_ids" in accepted
        self._cache_arg = next((a for a in ("cache", "past_key_values") if a in accepted), None)
        self.has_cache = self._cache_arg is not None and "use_cache" in accepted
        if kind == "seq2seq" and "decoder_input_ids" not in accepted:
            _bad(where, "module", "must take decoder_input_ids for kind='seq2seq'", TypeError)
        self._embedding = embedding
        self.gradient = "torch.autograd"
        self.has_own_generate = callable(getattr(module, "generate", None))

    def _device(self):
        p = next(self.module.parameters(), None)
        return p.device if p is not None else "cpu"

    def _tensor(self, a):
        torch = _torch()
        if a is None:
            return None
        return torch.as_tensor(np.array(a, dtype=np.int64), device=self._device())  # a copy

    def _kwargs(self, x, attention_mask, position_ids, z, z_mask):
        t = self._tensor
        if self.kind == "seq2seq":
            kw = {"input_ids": t(z), "decoder_input_ids": t(x)}
            if z_mask is not None:
                kw["attention_mask"] = t(z_mask)
            if attention_mask is not None:
                kw["decoder_attention_mask"] = t(attention_mask)
            return kw
        kw = {"input_ids": t(x)}
        if attention_mask is not None:
            if not self.accepts_attention_mask:
                raise NotSupported(f"{self.name}.forward takes no attention_mask")
            kw["attention_mask"] = t(attention_mask)
        if position_ids is not None:
            if not self.accepts_position_ids:
                raise NotSupported(f"{self.name}.forward takes no position_ids")
            kw["position_ids"] = t(position_ids)
        return kw

    @staticmethod
    def _logits_of(out):
        if isinstance(out, tuple | list):
            return out[0]
        if isinstance(out, dict) and "logits" in out:
            return out["logits"]
        return getattr(out, "logits", out)

    @staticmethod
    def _cache_of(out):
        if isinstance(out, tuple | list):
            return out[1] if len(out) > 1 else None
        for name in ("cache", "past_key_values"):
            value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
            if value is not None:
                return value
        return None

    def _forward(self, x, attention_mask, position_ids, z, z_mask):
        torch = _torch()
        kw = self._kwargs(x, attention_mask, position_ids, z, z_mask)
        if "use_cache" in self._accepted:
            kw["use_cache"] = False
        with torch.no_grad():
            return self._logits_of(self.module(**kw))

    def _cached_forward(self, x, cache, z, z_mask):
        if not self.has_cache:
            raise NotSupported(f"{self.name}.forward takes no cache (past_key_values)")
        torch = _torch()
        kw = self._kwargs(x, None, None, z, z_mask)
        kw["use_cache"] = True
        if cache is not None:
            kw[self._cache_arg] = cache
        with torch.no_grad():
            out = self.module(**kw)
        new = self._cache_of(out)
        if new is None:
            raise NotSupported(f"{self.name} returned no cache with use_cache=True")
        return self._logits_of(out), new

    def _own_generate(self, x, n, *, use_cache, sample, seed, z, z_mask, attention_mask):
        """The module's own ``generate`` (Hugging Face's, or one with its keywords), if any."""
        if not self.has_own_generate:
            return None
        torch = _torch()
        kw = {
            "max_new_tokens": n, "min_new_tokens": n, "do_sample": sample,
            "use_cache": use_cache, "pad_token_id": self.pad_token_id,
        }  # fmt: skip
        if self.kind == "seq2seq":
            kw["input_ids"], kw["decoder_input_ids"] = self._tensor(z), self._tensor(x)
            kw["attention_mask"] = self._tensor(np.ones_like(z) if z_mask is None else z_mask)
        else:
            kw["input_ids"] = self._tensor(x)
            mask = np.ones_like(x) if attention_mask is None else attention_mask
            kw["attention_mask"] = self._tensor(mask)
        if sample:
            kw.update(top_k=0, top_p=1.0, temperature=1.0)
        hf = self.framework == "hf"
        if hf:  # the raw logits of every step, to compare beyond the chosen tokens
            kw.update(output_logits=True, return_dict_in_generate=True)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.module.generate(**kw)
        if not hf:
            return _numpy(out).astype(np.int64), None
        logits = np.stack([_numpy(step) for step in out.logits], axis=1)
        return out.sequences.cpu().numpy(), logits

    def _embedding_module(self):
        torch = _torch()
        if self._embedding is not None:
            return self._embedding
        owner = self.module
        if self.kind == "seq2seq" and callable(getattr(owner, "get_decoder", None)):
            owner = owner.get_decoder()  # the decoder's tokens are the ones checked
        get = getattr(owner, "get_input_embeddings", None)
        if callable(get) and get() is not None:
            return get()
        for m in self.module.modules():
            if isinstance(m, torch.nn.Embedding):
                return m
        raise NotSupported(f"{self.name}: no nn.Embedding found; pass embedding=")

    def _influence(self, x, attention_mask, position_ids, z, z_mask):
        torch = _torch()
        leaves = []

        def hook(module, inputs, output):
            leaf = output.detach().requires_grad_(True)
            leaves.append(leaf)
            return leaf

        handle = self._embedding_module().register_forward_hook(hook)
        try:
            with torch.enable_grad():
                kw = self._kwargs(x, attention_mask, position_ids, z, z_mask)
                if "use_cache" in self._accepted:
                    kw["use_cache"] = False
                out = self._logits_of(self.module(**kw))  # (B, ℓ, N_V)
                if not leaves or leaves[-1].shape[:2] != tuple(x.shape):
                    raise NotSupported(f"{self.name}: the embedding output is not (B, ℓ, d)")
                E = leaves[-1]  # the last call: the decoder's, for an encoder-decoder
                g = torch.Generator().manual_seed(0)
                r = torch.randn(out.shape[-1], generator=g, dtype=out.dtype).to(out.device)
                projected = out @ r  # (B, ℓ)
                rows = []
                for t in range(x.shape[1]):
                    (grad,) = torch.autograd.grad(projected[:, t].sum(), E, retain_graph=True)
                    rows.append(grad.abs().sum(-1))  # (B, ℓ_in)
        finally:
            handle.remove()
        return torch.stack(rows, dim=1).detach().cpu().double().numpy()


def from_torch(
    module,
    *,
    vocab_size: int,
    kind: str = "causal",
    pad_token_id: int = 0,
    special_ids=(),
    max_length=None,
    output: str = "logits",
    positions=None,
    name=None,
    embedding=None,
) -> TokenModel:
    """A ``torch.nn.Module`` as a :class:`TokenModel` (call ``module.eval()`` yourself: the
    determinism check is there to notice when you did not).

    ``forward`` is called with keywords, Hugging Face style: ``input_ids`` (and
    ``decoder_input_ids`` for ``kind="seq2seq"``); ``attention_mask`` and ``position_ids`` when its
    signature names them; ``use_cache`` and ``cache``/``past_key_values`` when it names them (the
    cache object is opaque: passed back as returned). It returns logits ``(B, ℓ, N_V)`` (or
    ``output="probs"``/``"log_probs"``), as a tensor, a tuple's first item or ``.logits``.
    ``embedding``: the module whose output is the token embeddings, for the gradient checks
    (default ``get_input_embeddings()`` or the first ``nn.Embedding``).
    """
    return _TorchModel(
        module,
        "from_torch",
        kind=kind,
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        special_ids=special_ids,
        max_length=max_length,
        output=output,
        positions=positions,
        name=name,
        embedding=embedding,
    )


# ============================================================================== Hugging Face


class _HFModel(_TorchModel):
    framework = "hf"


def from_hf(model, *, kind=None, name=None, torch_dtype=None) -> TokenModel:
    """A Hugging Face model as a :class:`TokenModel`: a ``PreTrainedModel`` or the path of a local
    directory (``config.json`` and weights; loaded offline with ``AutoModelFor…``, set to eval).

    ``kind`` defaults from the config: ``is_encoder_decoder`` → ``"seq2seq"``, an architecture
    named ``…ForMaskedLM`` → ``"masked"``, else ``"causal"``. ``generate`` is the model's own
    (greedy and seeded sampling with and without the cache); the cache is the model's
    (``cache`` or ``past_key_values``).
    """
    where = "from_hf"
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        model = _load_hf(model, kind, torch_dtype)
    config = getattr(model, "config", None)
    if config is None:
        _bad(where, "model", "is not a Hugging Face model (it has no .config)", TypeError)
    if kind is None:
        kind = _hf_kind(config, type(model).__name__)
    vocab = getattr(model.get_output_embeddings(), "out_features", None) or config.vocab_size
    max_length = next(
        (
            getattr(config, a)
            for a in ("max_position_embeddings", "n_positions")
            if isinstance(getattr(config, a, None), int)
        ),
        None,
    )
    ids = {
        a: getattr(config, f"{a}_token_id", None) for a in ("pad", "bos", "eos", "decoder_start")
    }
    specials = [i for i in ids.values() if isinstance(i, int)]  # a list of eos ids: not special
    pad = next((i for i in (ids["pad"], ids["eos"], 0) if isinstance(i, int)), 0)
    adapted = _HFModel(
        model,
        where,
        kind=kind,
        vocab_size=int(vocab),
        pad_token_id=pad,
        special_ids=specials,
        max_length=max_length,
        output="logits",
        positions=True,
        name=name or type(model).__name__,
        embedding=None,
    )
    positions = getattr(getattr(model.base_model, "embeddings", None), "position_embeddings", None)
    offset = getattr(positions, "padding_idx", None)  # RoBERTa counts positions from pad + 1
    if isinstance(offset, int) and max_length is not None:
        adapted.max_length = max_length - offset - 1
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and getattr(config, "use_sliding_window", True) is not False:
        adapted.sliding_window = window
    return adapted


def _hf_kind(config, class_name: str) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    names = [class_name, *(getattr(config, "architectures", None) or [])]
    if any(n.endswith("ForMaskedLM") for n in names):
        return "masked"
    return "causal"


def _load_hf(path, kind, torch_dtype):
    import pathlib

    import transformers  # offline: every call below passes local_files_only=True

    p = pathlib.Path(str(path))
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"from_hf: argument 'model' = {str(path)!r} is not a directory with a config.json"
        )
    config = transformers.AutoConfig.from_pretrained(p, local_files_only=True)
    kind = kind or _hf_kind(config, "")
    auto = {
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
        "masked": transformers.AutoModelForMaskedLM,
        "causal": transformers.AutoModelForCausalLM,
    }[kind]
    kw = {"local_files_only": True}
    if torch_dtype is not None:
        kw["dtype"] = torch_dtype
    return auto.from_pretrained(p, **kw).eval()


# ====================================================================================== JAX


class _FunctionModel(TokenModel):
    def __init__(
        self,
        fn,
        where,
        *,
        batched,
        kind,
        vocab_size,
        pad_token_id,
        special_ids,
        max_length,
        output,
        positions,
        name,
        embed,
        from_embeddings,
        framework,
        columns=False,
        cached=None,
    ):
        if not callable(fn):
            _bad(where, "fn", f"must be callable, got {type(fn).__name__}", TypeError)
        if (embed is None) != (from_embeddings is None):
            _bad(where, "embed", "and from_embeddings go together: give both or neither")
        self.fn, self.batched, self.columns, self.framework = fn, batched, columns, framework
        self._configure(
            where,
            kind=kind,
            vocab_size=vocab_size,
            pad_token_id=pad_token_id,
            special_ids=special_ids,
            max_length=max_length,
            output=output,
            positions=positions,
            name=name or getattr(fn, "__name__", type(fn).__name__),
        )
        accepted = _accepted(fn)
        self.accepts_attention_mask = "attention_mask" in accepted
        self.accepts_position_ids = "position_ids" in accepted
        if kind == "seq2seq" and "z" not in accepted:
            _bad(where, "fn", "must take the context as z= for kind='seq2seq'", TypeError)
        self.embed, self.from_embeddings = embed, from_embeddings
        if cached is not None and not callable(cached):
            _bad(where, "cached", f"must be callable, got {type(cached).__name__}", TypeError)
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


def _function_model(
    fn,
    where,
    framework,
    *,
    vocab_size,
    kind="causal",
    batched=True,
    pad_token_id=0,
    special_ids=(),
    max_length=None,
    output="logits",
    positions=None,
    name=None,
    embed=None,
    from_embeddings=None,
    columns=False,
    cached=None,
):
    return _FunctionModel(
        fn,
        where,
        batched=batched,
        kind=kind,
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        special_ids=special_ids,
        max_length=max_length,
        output=output,
        positions=positions,
        name=name,
        embed=embed,
        from_embeddings=from_embeddings,
        framework=framework,
        columns=columns,
        cached=cached,
    )


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
        _bad(
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
