"""The one interface the conformance checks take: :class:`TokenModel`, token ids ``(B, ℓ)`` to
outputs in the paper's orientation ``(B, N_V, ℓ)``, with the generation, cache and gradient hooks
each framework's adapter fills in (:mod:`.torch_adapters`, :mod:`.function_adapters`)."""

from __future__ import annotations

import inspect

import numpy as np

from ..paper.checks import check_count, fail

KINDS = ("causal", "masked", "seq2seq")
OUTPUTS = ("logits", "log_probs", "probs")


class NotSupported(Exception):
    """The model cannot do what a check needs (no cache, no gradients, …): the check is skipped."""


def check_kind(where: str, kind) -> None:
    """A model's kind: one of :data:`KINDS`."""
    if kind not in KINDS:
        fail(where, "kind", f"must be one of {KINDS}, got {kind!r}")


def accepted_arguments(fn) -> set[str]:
    """The keyword arguments ``fn`` names explicitly (``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def takes_keyword(fn, name: str) -> bool:
    """``fn`` can be called with ``name=``: it names it, or takes ``**kwargs``, or its signature
    cannot be read (then it is not refused)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in accepted_arguments(fn) or any(
        p.kind == p.VAR_KEYWORD for p in parameters.values()
    )


def check_options(where: str, options: dict, own=()) -> None:
    """Every keyword of ``options`` is a setting (:data:`DEFAULT_SETTINGS`) or one of the
    adapter's ``own`` options: an unknown one is refused by name, with the known ones."""
    known = sorted({*DEFAULT_SETTINGS, *own})
    unknown = sorted(set(options) - set(known))
    if unknown:
        fail(where, unknown[0], f"is not an option; the options are {', '.join(known)}", TypeError)


def int_array(x, where: str, argument: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0 or not np.issubdtype(x.dtype, np.integer):
        fail(
            where,
            argument,
            f"must be integer token ids of shape (B, ℓ) with ℓ ≥ 1, got {x.dtype} {x.shape}",
        )
    return x


# ================================================================================ the interface


#: the defaults of the settings every adapter takes (:meth:`TokenModel._configure`'s, but
#: ``vocab_size`` and ``name``, which each adapter gives)
DEFAULT_SETTINGS = dict(
    kind="causal", pad_token_id=0, special_ids=(), max_length=None, output="logits", positions=None
)


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
        check_kind(where, kind)
        if output not in OUTPUTS:
            fail(where, "output", f"must be one of {OUTPUTS}, got {output!r}")
        if not isinstance(vocab_size, int | np.integer) or vocab_size < 2:
            fail(where, "vocab_size", f"must be an integer ≥ 2, got {vocab_size!r}")
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

    # The hooks of the checks Hugging Face's own model tests make (:mod:`.framework_checks`).

    def _attention_implementations(self) -> tuple[str, ...]:
        raise NotSupported(f"{self.name} has no choice of attention implementation")

    def _forward_with_attention(self, implementation, x, attention_mask, position_ids, z, z_mask):
        raise NotSupported(f"{self.name} has no choice of attention implementation")

    def _generate_until(self, x, n, eos, z):
        raise NotSupported(f"{self.name} has no generate of its own that takes an eos token")

    def _loss_from_labels(self, x, labels, z):
        raise NotSupported(f"{self.name} computes no loss from labels")

    def _in_dtype(self, dtype: str) -> TokenModel:
        raise NotSupported(f"{self.name} cannot be cast to {dtype}")

    # ---- the public methods ----------------------------------------------------------------------

    def logits(self, x, *, attention_mask=None, position_ids=None, z=None, z_mask=None):
        """Outputs ``(B, N_V, ℓ)`` float64 for token ids ``x`` ``(B, ℓ)`` (or ``(ℓ,)``).

        ``attention_mask`` (``(B, ℓ)``, 1 = real token, 0 = padding) and ``position_ids`` are
        passed only when not None; ``z``/``z_mask`` are the context and its mask (seq2seq).
        """
        x = int_array(x, f"{self.name}.logits")
        if self.kind == "seq2seq" and z is None:
            fail(f"{self.name}.logits", "z", "is required for an encoder-decoder (the context)")
        out = outputs_of(self._forward(x, attention_mask, position_ids, z, z_mask), self.name)
        expected = (*x.shape, self.vocab_size)
        if out.shape != expected:
            fail(
                self.name,
                "output",
                f"has shape {out.shape}; expected (B, ℓ, N_V) = {expected} "
                f"(N_V = vocab_size = {self.vocab_size})",
            )
        return np.transpose(out, (0, 2, 1))

    def cached_logits(self, x, chunks, *, z=None):
        """Outputs ``(B, N_V, ℓ)`` computed through the model's cache: the first ``chunks[0]``
        tokens in one call (prefill), then ``chunks[1]`` tokens, … (the rest one at a time)."""
        x = int_array(x, f"{self.name}.cached_logits")
        columns, cache, start = [], None, 0
        sizes = list(chunks) + [1] * x.shape[1]
        for size in sizes:
            if start >= x.shape[1]:
                break
            out, cache = self._cached_forward(x[:, start : start + size], cache, z, None)
            columns.append(as_numpy(out))
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
        x = int_array(x, f"{self.name}.influence")
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
        ``generate`` cannot give them.

        ``n`` ≥ 0: ``n = 0`` returns ``x`` (and logits ``(B, 0, N_V)``) without calling the model."""
        x = int_array(x, f"{self.name}.generate")
        n = check_count(f"{self.name}.generate", "n", n, 0)
        if n == 0:
            return (x, np.zeros((x.shape[0], 0, self.vocab_size))) if return_logits else x
        kw = dict(use_cache=use_cache, sample=sample, seed=seed, z=z, z_mask=z_mask)
        own = self._own_generate(x, n, attention_mask=attention_mask, **kw)
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
                last = as_numpy(out)[:, -1, :]
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
            token = choose_token(last, self.output, rng if sample else None)
            x = np.concatenate([x, token[:, None]], axis=1)
            if mask is not None:
                mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)
            del step
        return (x, np.stack(steps, axis=1)) if return_logits else x

    def logits_with_attention(
        self, implementation, x, *, attention_mask=None, position_ids=None, z=None, z_mask=None
    ):
        """:meth:`logits` with the model's attention computed by ``implementation`` (one of
        :meth:`attention_implementations`; the model's own setting is restored after)."""
        where = f"{self.name}.logits_with_attention"
        x = int_array(x, where)
        choices = self.attention_implementations()
        if implementation not in choices:
            fail(where, "implementation", f"must be one of {choices}, got {implementation!r}")
        raw = self._forward_with_attention(
            implementation, x, attention_mask, position_ids, z, z_mask
        )
        return np.transpose(outputs_of(raw, self.name), (0, 2, 1))

    def attention_implementations(self) -> tuple[str, ...]:
        """The attention implementations the model can switch between (Hugging Face's
        ``attn_implementation``: ``"eager"``, ``"sdpa"``), the reference first."""
        return tuple(self._attention_implementations())

    def generate_until(self, x, n, *, eos=None, z=None) -> np.ndarray:
        """Greedy ``x`` + at most ``n`` tokens from the model's own ``generate``, stopping a row at
        the token ``eos`` (None: never) and filling finished rows with ``pad_token_id``;
        ``n = 0`` returns ``x``."""
        x = int_array(x, f"{self.name}.generate_until")
        if check_count(f"{self.name}.generate_until", "n", n, 0) == 0:
            return x
        return np.asarray(self._generate_until(x, n, eos, z))

    def loss_from_labels(self, x, labels, *, z=None) -> float:
        """The model's own loss given ``labels`` (``(B, ℓ)``, −100 = ignored), Hugging Face's
        ``model(…, labels=labels).loss``."""
        x = int_array(x, f"{self.name}.loss_from_labels")
        return float(self._loss_from_labels(x, np.asarray(labels), z))

    def in_dtype(self, dtype: str) -> TokenModel:
        """A copy of the model whose parameters and computation are in ``dtype``
        (``"bfloat16"``); this model is unchanged."""
        return self._in_dtype(dtype)

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


def choose_token(last, output, rng):
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


def outputs_of(raw, name) -> np.ndarray:
    """The model's raw output as float64 numpy, or a one-line error naming what it returned."""
    kind = getattr(getattr(raw, "dtype", None), "kind", "")
    if isinstance(raw, str | bytes) or raw is None or kind in ("U", "S"):
        what = f"{type(raw).__name__} {str(raw)[:40]!r}"
        fail(name, "output", f"is {what}; expected an array of logits (B, ℓ, N_V)", TypeError)
    try:
        return as_numpy(raw)
    except (TypeError, ValueError) as error:
        fail(
            name, "output", f"({type(raw).__name__}) is not an array of numbers: {error}", TypeError
        )


def as_numpy(a) -> np.ndarray:
    """Any framework's array as float64 numpy (torch tensors detached, bfloat16 via float32)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        a = a.float() if a.is_floating_point() else a
        a = a.numpy()
    return np.asarray(a, np.float64)
