"""PyTorch modules (Hugging Face's calling convention) and Hugging Face models as
:class:`.token_model.TokenModel`: gradients by ``torch.autograd``, ``generate`` the model's own.
torch is imported only when a torch model is given."""

from __future__ import annotations

import copy
import inspect

import numpy as np

from ..paper.checks import fail
from .token_model import (
    DEFAULT_SETTINGS,
    NotSupported,
    TokenModel,
    accepted_arguments,
    as_numpy,
    check_kind,
    check_options,
    takes_keyword,
)

# ===================================================================================== torch


def _torch():
    import torch

    return torch


class _TorchModel(TokenModel):
    framework = "torch"

    def __init__(self, module, where, *, name, embedding, **settings):
        """``settings``: :meth:`TokenModel._configure`'s (kind, vocab_size, pad_token_id, …)."""
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            fail(
                where,
                "module",
                f"must be a torch.nn.Module, got {type(module).__name__}",
                TypeError,
            )
        self.module = module
        self._configure(where, name=name or type(module).__name__, **settings)
        if not takes_keyword(module.forward, "input_ids"):
            fail(
                where,
                "module",
                f"must take token ids as forward(input_ids=…), Hugging Face style; "
                f"{type(module).__name__}.forward{inspect.signature(module.forward)} does not",
                TypeError,
            )
        accepted = accepted_arguments(module.forward)
        self._accepted = accepted
        self.accepts_attention_mask = "attention_mask" in accepted
        self.accepts_position_ids = "position_ids" in accepted
        self._cache_arg = next((a for a in ("cache", "past_key_values") if a in accepted), None)
        self.has_cache = self._cache_arg is not None and "use_cache" in accepted
        if self.kind == "seq2seq" and "decoder_input_ids" not in accepted:
            fail(where, "module", "must take decoder_input_ids for kind='seq2seq'", TypeError)
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
            return as_numpy(out).astype(np.int64), None
        logits = np.stack([as_numpy(step) for step in out.logits], axis=1)
        return out.sequences.cpu().numpy(), logits

    def _in_dtype(self, dtype):
        torch = _torch()
        if dtype != "bfloat16":
            fail(f"{self.name}.in_dtype", "dtype", f"must be 'bfloat16', got {dtype!r}")
        low = copy.copy(self)  # the same settings, a cast copy of the module
        low.module = copy.deepcopy(self.module).to(torch.bfloat16)
        low.name = f"{self.name} (bfloat16)"
        if self._embedding is not None:  # the same submodule, in the copy
            names = {m: n for n, m in self.module.named_modules()}
            low._embedding = low.module.get_submodule(names[self._embedding])
        return low

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


def from_torch(module, *, vocab_size: int, name=None, embedding=None, **settings) -> TokenModel:
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
    check_options("from_torch", settings, ("vocab_size", "name", "embedding"))
    settings = {**DEFAULT_SETTINGS, **settings}
    return _TorchModel(
        module, "from_torch", vocab_size=vocab_size, name=name, embedding=embedding, **settings
    )


# ============================================================================== Hugging Face


class _HFModel(_TorchModel):
    framework = "hf"
    decoder_start_token_id: int | None = None

    def _attention_implementations(self):
        if not getattr(self.module, "_supports_sdpa", False):
            raise NotSupported(f"{self.name} has only one attention implementation (no SDPA)")
        return ("eager", "sdpa")

    def _forward_with_attention(self, implementation, x, attention_mask, position_ids, z, z_mask):
        before = self.module.config._attn_implementation
        self.module.set_attn_implementation(implementation)
        try:
            return self._forward(x, attention_mask, position_ids, z, z_mask)
        finally:
            self.module.set_attn_implementation(before)

    def _generate_until(self, x, n, eos, z):
        torch = _torch()
        config = copy.deepcopy(self.module.generation_config)
        eos = [] if eos is None else eos  # None would fall back to the model's own eos
        config.update(
            eos_token_id=eos,
            pad_token_id=self.pad_token_id,
            max_new_tokens=n,
            min_new_tokens=None,
            do_sample=False,
            forced_eos_token_id=None,
        )
        kw = {"input_ids": self._tensor(x), "attention_mask": self._tensor(np.ones_like(x))}
        if self.kind == "seq2seq":
            kw = {"input_ids": self._tensor(z), "decoder_input_ids": self._tensor(x)}
        with torch.no_grad():
            return self.module.generate(**kw, generation_config=config).cpu().numpy()

    def _loss_from_labels(self, x, labels, z):
        torch = _torch()
        kw = self._kwargs(x, None, None, z, None)
        if self.kind == "seq2seq":
            del kw["decoder_input_ids"]  # the model makes them from the labels
        kw["labels"] = torch.as_tensor(np.array(labels, dtype=np.int64), device=self._device())
        if "use_cache" in self._accepted:
            kw["use_cache"] = False
        with torch.no_grad():
            return self.module(**kw).loss.item()


def from_hf(model, *, kind=None, name=None, torch_dtype=None) -> TokenModel:
    """A Hugging Face model as a :class:`TokenModel`: a ``PreTrainedModel`` or the path of a local
    directory (``config.json`` and weights; loaded offline with ``AutoModelFor…``, set to eval).

    ``kind`` (one of ``"causal"``, ``"masked"``, ``"seq2seq"``) defaults from the config: ``is_encoder_decoder`` → ``"seq2seq"``, an architecture
    named ``…ForMaskedLM`` → ``"masked"``, else ``"causal"``. ``generate`` is the model's own
    (greedy and seeded sampling with and without the cache); the cache is the model's
    (``cache`` or ``past_key_values``).
    """
    where = "from_hf"
    if kind is not None:
        check_kind(where, kind)  # before anything is loaded
    torch = _torch()
    dtype = _check_dtype(torch, torch_dtype)
    if not isinstance(model, torch.nn.Module):
        model = _load_hf(model, kind, dtype)
    elif dtype is not None:
        fail(
            where,
            "torch_dtype",
            f"= {torch_dtype!r} applies when loading a directory; the model given is already "
            "loaded (convert it with model.to(dtype))",
        )
    config = getattr(model, "config", None)
    if config is None:
        fail(where, "model", "is not a Hugging Face model (it has no .config)", TypeError)
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
    settings = dict(kind=kind, vocab_size=int(vocab), pad_token_id=pad, special_ids=specials)
    settings.update(max_length=max_length, output="logits", positions=True)
    adapted = _HFModel(model, where, name=name or type(model).__name__, embedding=None, **settings)
    positions = getattr(getattr(model.base_model, "embeddings", None), "position_embeddings", None)
    offset = getattr(positions, "padding_idx", None)  # RoBERTa counts positions from pad + 1
    if isinstance(offset, int) and max_length is not None:
        adapted.max_length = max_length - offset - 1
    adapted.decoder_start_token_id = ids["decoder_start"]
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and getattr(config, "use_sliding_window", True) is not False:
        adapted.sliding_window = window
    return adapted


def _check_dtype(torch, torch_dtype):
    """``None``, a ``torch.dtype`` or its name (``"float16"``), or ``"auto"`` (the config's)."""
    if torch_dtype is None or torch_dtype == "auto" or isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if isinstance(torch_dtype, str) and isinstance(getattr(torch, torch_dtype, None), torch.dtype):
        return getattr(torch, torch_dtype)
    fail(
        "from_hf",
        "torch_dtype",
        f"must be a torch.dtype, its name (e.g. 'float32', 'bfloat16') or 'auto', got "
        f"{torch_dtype!r}",
    )


def _hf_kind(config, class_name: str) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    names = [class_name, *(getattr(config, "architectures", None) or [])]
    if any(n.endswith("ForMaskedLM") for n in names):
        return "masked"
    return "causal"


def _load_hf(path, kind, torch_dtype):
    import os
    import pathlib

    import transformers  # offline: every call below passes local_files_only=True

    if not isinstance(path, (str, os.PathLike)):
        fail(
            "from_hf",
            "model",
            f"must be a Hugging Face model or a directory path, got {type(path).__name__}",
            TypeError,
        )
    p = pathlib.Path(path)
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
