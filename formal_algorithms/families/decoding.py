"""Algorithm 14 with a key/value cache for every decoder family, written once.

A family's cached form is its uncached Algorithm 10 evaluated at the new columns only, given as a
:class:`CachedForm` of three module-level functions (static under jit):

- ``embed(tokens, positions, head, config)``: lines 1-3 at the columns' true positions;
- ``layer(X, positions, layer, kv, config) -> (X, kv)``: lines 5-8, line 6's keys and values
  joining the layer's store. Where the family's uncached layer takes its attention as an argument
  (the paper's ``pre_ln_layer``, ``post_ln_layer``, GPT-NeoX's and Phi's parallel layers),
  :func:`cached_layer` derives the cached layer from it: the same function, handed an attention
  that runs :func:`..practice.kv_attention.cached_attention` (as penzai builds
  ``KVCachingAttention.from_uncached``); nothing of the layer is written again;
- ``final(X, head, config)``: lines 10-11 up to the logits ``W_u X``.

``head`` holds θ's arrays outside the layers, ``config`` θ's configuration (hashable, static).
:func:`cached_block` runs lines 1-11 for columns start … start+n−1 over a :class:`DecoderCache`;
:class:`CachedDecoder` is Algorithm 14 over it (a jitted prefill of a bucketed prompt, then one
jitted column per token), the class every family's decoder is. Decision: the prefill runs line
4's loop as ``lax.scan`` over the stacked layers (one compiled layer body whatever L), each step
over the tuple of layers (each weight read in place).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.checks import check_count, check_key, check_sizes, check_tokens, fail
from ..paper.inference import check_sampled, check_tau, sample_token, step_key
from ..paper.normalisation import layer_norm_columns
from ..practice.fast import stack_layers
from ..practice.kv_attention import KV, cached_attention


class CachedForm(NamedTuple):
    """A family's Algorithm 10 at the new columns (see the module's docstring)."""

    embed: Callable  # (tokens, positions, head, config) -> X (d_e, n)
    layer: Callable  # (X, positions, layer, kv: KV, config) -> (X, kv)
    final: Callable  # (X, head, config) -> logits (N_V, n)


class DecoderCache(NamedTuple):
    """Keys and values of every layer: ``K[l, g, t]`` is key set g's ``k_t`` in layer l."""

    K: jax.Array  # (L, G, T, d_attn)
    V: jax.Array  # (L, G, T, d_mid)


def init_decoder_cache(L: int, G: int, d_attn: int, d_mid: int, T: int, dtype) -> DecoderCache:
    """An empty cache of T positions for L layers of G key/value sets."""
    return DecoderCache(jnp.zeros((L, G, T, d_attn), dtype), jnp.zeros((L, G, T, d_mid), dtype))


def cached_layer(layer_form, projection, X, layer, positions, kv: KV, *args, window=None, **kw):
    """Lines 5-8 of a family's layer, ``layer_form(X, layer, Mask, *args, attention=…, **kw)``
    (its uncached function), with line 6's attention over the store ``kv``: the keys and values
    of ``projection(W)(X̃, positions)`` (Algorithm 4's lines 1-3 as the family computes them) are
    written at ``positions`` and each query attends to the stored positions ≤ its own (the mask
    comes from positions, :func:`..practice.kv_attention.position_mask`; ``layer_form``'s own
    ``Mask`` argument is unused). Returns ``(X, new store)``."""
    written = []

    def attention(X_tilde, Z, W, Mask):  # Z is X_tilde: self-attention
        A, new = cached_attention(
            projection(W), W.W_o, W.b_o, X_tilde, positions, kv, window=window
        )
        written.append(new)
        return A

    X = layer_form(X, layer, None, *args, attention=attention, **kw)
    (kv,) = written  # one self-attention per layer
    return X, kv


def _block(tokens, start, layers, head, cache: DecoderCache, form: CachedForm, config):
    """Algorithm 10 for the columns at positions start … start+n−1, keys and values cached;
    ``layers``: a tuple (line 4's loop unrolled) or one stacked layer (line 4 as ``lax.scan``)."""
    positions = start + jnp.arange(tokens.shape[0])
    X = form.embed(tokens, positions, head, config)  # lines 1-3

    def layer_step(X, xs):  # lines 5-8 of one layer
        layer, K_l, V_l = xs
        X, kv = form.layer(X, positions, layer, KV(K_l, V_l), config)
        return X, tuple(kv)

    if type(layers) is tuple:  # a tuple of layers, not one stacked layer
        K, V = [], []
        for l, layer in enumerate(layers):  # line 4
            X, (K_l, V_l) = layer_step(X, (layer, cache.K[l], cache.V[l]))
            K.append(K_l)
            V.append(V_l)
        K, V = jnp.stack(K), jnp.stack(V)
    else:
        X, (K, V) = jax.lax.scan(layer_step, X, (layers, cache.K, cache.V))  # lines 4-9
    logits = form.final(X, head, config)  # lines 10-11 (part: logits)
    return logits, DecoderCache(K, V)


cached_block = jax.jit(_block, static_argnames=("form", "config"))


@jax.jit
def draw(key, i, p, tau):
    """Line 5 of Algorithm 14 at step i, on the device: ``sample_token(fold_in(key, i), p, τ)``
    (``-1`` when p defines no distribution; the caller checks it with ``check_sampled``)."""
    return sample_token(step_key(key, i), p, tau)


@functools.partial(jax.jit, static_argnames=("form", "config"), donate_argnums=(4,))
def cached_draw_step(token, t, layers, head, cache, key, i, tau, form, config):
    """One column (position t) of :func:`cached_block`, the cache donated, then step i's draw
    from it: ``(next token, cache)``, one round trip to the host per token."""
    logits, cache = _block(token[None], t, layers, head, cache, form, config)
    return sample_token(step_key(key, i), logits[:, 0], tau), cache


def check_start(caller: str, start, n: int, cache: DecoderCache, sizes=None) -> None:
    """Columns start … start+n−1 fit the cache's T positions, else refused by name; ``sizes``
    (L, G, d_attn, d_mid), when given: the cache is θ's (from ``init_*_cache`` of the same θ)."""
    if not isinstance(cache, DecoderCache):
        fail(
            caller,
            "cache",
            f"must be the DecoderCache of init_*_cache, got {type(cache).__name__}",
            TypeError,
        )
    if sizes is not None:
        L, G, d_attn, d_mid = sizes
        want_K, want_V = (L, G, None, d_attn), (L, G, None, d_mid)
        got_K, got_V = cache.K.shape, cache.V.shape
        if (
            len(got_K) != 4
            or len(got_V) != 4
            or any(
                w is not None and w != g
                for w, g in zip(want_K + want_V, got_K + got_V, strict=True)
            )
        ):
            fail(
                caller,
                "cache",
                f"has keys {got_K} and values {got_V}; θ needs (L, G, T, ·) = "
                f"({L}, {G}, T, {d_attn}) and ({L}, {G}, T, {d_mid}): make it with init_*_cache(θ, T)",
            )
    T = cache.K.shape[2]
    if start < 0 or start + n > T:
        fail(caller, "start", f"= {start} with {n} tokens does not fit the cache of {T} positions")


def _bucket(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


class DecoderTheta(NamedTuple):
    """A decoder's arrays as θ's paths name them in errors (``theta.head.gamma``)."""

    layers: tuple
    head: object


class CachedDecoder:
    """A family's θ ready for cached decoding: its layers as a tuple and stacked once, two
    compiled functions (prefill of a bucketed prompt, one column per step).

    ``form``: the family's :class:`CachedForm`; ``layers``: θ's layers as the form reads them;
    ``head``: θ's other arrays; ``config``: θ's configuration; ``N_V``; ``kv_shape``: ``(L, G,
    d_attn, d_mid)``; ``dtype``: the cache's; ``context``: the model's context, or None;
    ``name``: the decoder's name in error messages."""

    def __init__(self, form, layers, head, config, *, N_V, kv_shape, dtype, context, name):
        self.form, self.layers, self.head, self.config = form, tuple(layers), head, config
        self.stacked = stack_layers(self.layers)
        self.N_V, self.kv_shape, self.dtype = N_V, kv_shape, dtype
        check_sizes(name, context=context)  # None: no limit
        self.context, self.name = context, name

    def where(self, method: str) -> str:
        """A method's name in errors: ``gpt_neox_decoder(θ).generate (Algorithm 14 on …)``."""
        head, _, label = self.name.partition(" (")
        return f"{head}(θ).{method} ({label}" if label else f"{head}(θ).{method}"

    def init_cache(self, T: int) -> DecoderCache:
        """An empty cache of T positions for this θ."""
        check_sizes(self.where("init_cache"), T=T)
        return init_decoder_cache(*self.kv_shape, T, self.dtype)

    def logits(self, tokens, start, cache: DecoderCache):
        """``W_u X`` for the columns at positions start … start+n−1, given a cache holding
        positions < start: ``(logits (N_V, n), new cache)``; column j equals column start + j of
        the family's uncached forward on the whole sequence."""
        where = self.where("logits")
        tokens = jnp.asarray(tokens)
        check_tokens(where, "tokens", tokens, self.N_V, None)
        check_start(where, start, tokens.shape[0], cache)
        static = dict(form=self.form, config=self.config)
        return cached_block(tokens, jnp.asarray(start), self.stacked, self.head, cache, **static)

    def stream(self, prompt, *, max_new: int, key=None, tau=0.0, stop=()):
        """Algorithm 14 with a cache, one token at a time: yields each sampled token as soon as
        it is drawn (so the first arrives after the prefill). Step i draws with
        ``fold_in(key, i)`` as the library's Algorithm 14; τ = 0 is the argmax. Stops after
        ``max_new`` tokens or after yielding a token in ``stop``. The arguments are checked
        when it is called, before the first token is asked for."""
        return self._tokens(self._checked("stream", prompt, max_new, key, tau, stop))

    def generate(self, prompt, *, max_new: int, key=None, tau=0.0, stop=()) -> list[int]:
        """The tokens of :meth:`stream` as a list."""
        return list(self._tokens(self._checked("generate", prompt, max_new, key, tau, stop)))

    def _checked(self, method, prompt, max_new, key, tau, stop):
        """The arguments of ``method`` checked under its name: ``(where, prompt, max_new, key,
        τ, stop)``, the key drawn for τ = 0 (unused: the argmax)."""
        where, prompt = self.where(method), np.asarray(prompt)
        tau = check_tau(where, tau)
        if isinstance(stop, (int, np.integer, str)) or not hasattr(stop, "__contains__"):
            message = f"must be a collection of token ids such as (eos,), got {stop!r}"
            fail(where, "stop", message, TypeError)
        if key is not None:
            check_key(where, key)
        check_tokens(where, "prompt", prompt, self.N_V, None)
        if prompt.ndim != 1 or prompt.shape[0] == 0:
            fail(where, "prompt", "must be a non-empty 1-D sequence of token ids")
        max_new, ell = check_count(where, "max_new", max_new), prompt.shape[0]
        if self.context is not None and ell + max_new > self.context:
            message = (
                f"= {max_new} with a prompt of {ell} tokens exceeds the model's context "
                f"of {self.context} positions"
            )
            fail(where, "max_new", message)
        if key is None and tau > 0 and max_new > 0:  # randomness is an explicit key
            fail(where, "key", f"is None, but τ = {tau} samples: give a jax.random key")
        key = jax.random.key(0) if key is None else key
        return where, prompt, max_new, key, tau, stop

    def _tokens(self, checked):
        """The tokens of a :meth:`_checked` call, one at a time."""
        where, prompt, max_new, key, tau, stop = checked
        if max_new == 0:
            return
        ell = prompt.shape[0]
        padded = np.zeros(_bucket(ell), np.int32)
        padded[:ell] = prompt
        cache = self.init_cache(_bucket(ell + max_new))
        static = dict(form=self.form, config=self.config)
        logits, cache = cached_block(
            jnp.asarray(padded), 0, self.stacked, self.head, cache, **static
        )
        p = logits[:, ell - 1]  # P[:, ℓ−1]; padded columns (≥ ℓ) are overwritten before use
        y = draw(key, jnp.int32(0), p, tau)  # line 5 of step 0, on the device
        for i in range(max_new):
            y = int(y)
            check_sampled(where, y, i + 1, DecoderTheta(self.layers, self.head))
            yield y  # line 6
            if y in stop or i == max_new - 1:
                return
            t, step = jnp.int32(ell + i), jnp.int32(i + 1)
            args = (jnp.int32(y), t, self.layers, self.head, cache, key, step, tau)
            y, cache = cached_draw_step(*args, **static)  # lines 3-5 of the next step


# ------------------------------------------------------- the paper's head (GPT-NeoX, OPT, Phi)


class PaperHead(NamedTuple):
    """θ's arrays outside the layers for a family with the paper's layer norms: ``W_p`` None
    when positions enter by rotation; ``gamma``, ``beta`` None when line 10 is dropped (Post-LN
    OPT); ``W_u`` (``W_eᵀ`` when tied); ``b_u`` None unless the unembedding has a bias (Phi)."""

    W_e: jax.Array
    W_p: jax.Array | None
    gamma: jax.Array | None
    beta: jax.Array | None
    W_u: jax.Array
    b_u: jax.Array | None = None


def paper_embed(tokens, positions, head: PaperHead, config):
    """Lines 1-3 for the new columns: ``W_e[:, x[t]] + W_p[:, t]`` (no ``W_p``: ``W_e[:, x[t]]``)."""
    X = head.W_e[:, tokens]  # lines 1-3
    return X if head.W_p is None else X + head.W_p[:, positions]


def paper_final(X, head: PaperHead, config):
    """Lines 10-11 up to the logits: ``layer_norm(X | γ, β)`` (unless dropped), ``W_u X + b_u``."""
    if head.gamma is not None:
        X = layer_norm_columns(X, head.gamma, head.beta, config.eps)  # line 10
    logits = (
        head.W_u @ X if head.b_u is None else head.W_u @ X + head.b_u[:, None]
    )  # line 11 (part: logits)
    return logits


def paper_form(layer) -> CachedForm:
    """The cached form of a family with the paper's embedding and head (:class:`PaperHead`) and
    its own cached ``layer``."""
    return CachedForm(paper_embed, layer, paper_final)


def paper_decoder(form, theta, head: PaperHead, config, *, context, name) -> CachedDecoder:
    """The :class:`CachedDecoder` of a θ whose layers hold the paper's ``W``
    (:class:`~formal_algorithms.paper.attention.MHAttentionParams`, one key/value set per head)."""
    W = theta.layers[0].W
    H, d_attn, _ = np.shape(W.W_k)
    kv_shape = (len(theta.layers), H, d_attn, np.shape(W.W_v)[1])
    N_V = np.shape(theta.W_e)[1]
    return CachedDecoder(
        form,
        theta.layers,
        head,
        config,
        N_V=N_V,
        kv_shape=kv_shape,
        dtype=theta.W_e.dtype,
        context=context,
        name=name,
    )
