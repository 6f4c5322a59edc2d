"""A Hugging Face folder as the library's own forward: GPT-2 (Algorithm 10), BERT (Algorithm 9's
encoder with BERT's substitutions) and Llama (the Llama family), for ``formal-algorithms trace``.

Only what the folder holds is read (``local_files_only``; nothing is downloaded, no environment
variable is set): its ``config.json``, weights and tokenizer. The converters are the interop
modules' own (:mod:`.gpt2`, :mod:`.bert`, :func:`~formal_algorithms.families.llama_loading.llama_from_state_dict`).
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

#: The model types this module converts, and the transformers class of each.
KINDS = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "llama": "LlamaForCausalLM"}
#: A folder's weight files (one of them) and tokenizer files (any of them).
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


def read_folder(directory, option: str, kinds, reader: str) -> dict:
    """A Hugging Face folder's ``config.json``, checked before anything is loaded: parsed here (so
    a damaged file is named), its model type one of ``kinds`` (``reader`` says who reads them),
    a weight file present and a safetensors file's header readable. Errors name ``option`` (the
    command-line option that gave the folder) and the folder."""
    path = pathlib.Path(directory)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"{option} {str(directory)!r} {what}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{option} {str(directory)!r}: config.json is not JSON ({error})"
        ) from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in kinds:
        raise ValueError(
            f"{option} {str(directory)!r} holds a {kind!r} model; {reader} "
            f"{', '.join(sorted(kinds))} only"
        )
    weights = [path / name for name in WEIGHTS if (path / name).is_file()]
    if not weights:
        raise ValueError(
            f"{option} {str(directory)!r} has no weights ({' or '.join(WEIGHTS[::2])})"
        )
    if weights[0].name == "model.safetensors":
        _check_safetensors(option, directory, weights[0])
    return config


def has_tokenizer(directory) -> bool:
    """Whether the folder holds a tokenizer file (:data:`TOKENIZER`)."""
    return any((pathlib.Path(directory) / name).is_file() for name in TOKENIZER)


def _check_safetensors(option, directory, file):
    """The header of a safetensors file: 8 bytes of length, then that much JSON."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        ok = 0 < n <= size - 8
        try:
            ok = ok and isinstance(json.loads(f.read(n)), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
    if not ok:
        raise ValueError(
            f"{option} {str(directory)!r}: {file.name} is not a readable safetensors file "
            "(its header is damaged or it is another format)"
        )


class Loaded(NamedTuple):
    kind: str  # a key of KINDS
    algorithm: int  # the paper's algorithm the forward is
    decoder: bool  # causal: Algorithm 14 can prompt it
    logits: Callable  # token ids (ℓ,) -> W_u X, (N_V, ℓ)
    forward: Callable  # token ids -> what to trace (P where the family has it)
    tokenizer: Any
    context: int  # the longest input
    sizes: dict  # L, H
    description: str


def load_for_trace(directory, option: str = "load_for_trace: argument 'directory'") -> Loaded:
    """Read ``directory``; errors name ``option`` (the command-line option that gave it; called
    from Python, the function and its argument)."""
    import transformers

    path = pathlib.Path(directory)
    read_folder(directory, option, KINDS, "the trace reads")
    if not has_tokenizer(directory):
        raise ValueError(
            f"{option} {str(directory)!r} has no tokenizer ({', '.join(TOKENIZER)}): the trace "
            "reads its prompt as text"
        )
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"{option} {str(directory)!r} has no usable tokenizer ({error})") from None
    transformers.utils.logging.disable_progress_bar()
    cls = getattr(transformers, KINDS[config.model_type])
    try:
        model = cls.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{option} {str(directory)!r}: its weights cannot be read ({error})"
        ) from None
    return _CONVERT[config.model_type](model, tokenizer)


def _gpt2(model, tokenizer) -> Loaded:
    from ..paper.architectures import d_transformer, d_transformer_logits
    from ..paper.validation import hyperparameters
    from .gpt2 import d_transformer_from_gpt2, d_transformer_kwargs_from_gpt2

    theta = d_transformer_from_gpt2(model)
    kw = d_transformer_kwargs_from_gpt2(model)
    hp = hyperparameters(theta)
    return Loaded(
        "gpt2",
        10,
        True,
        functools.partial(_call, d_transformer_logits, theta=theta, **kw),
        functools.partial(_call, d_transformer, theta=theta, **kw),
        tokenizer,
        hp["ell_max"],
        {"L": hp["L"], "H": hp["H"]},
        f"GPT-2 as Algorithm 10: L = {hp['L']}, H = {hp['H']}, d_e = {hp['d_e']}",
    )


def _bert(model, tokenizer) -> Loaded:
    from .bert import bert_from_hf, bert_kwargs_from_hf, bert_logits

    params = bert_from_hf(model)
    kw = bert_kwargs_from_hf(model)
    config = model.config
    logits = functools.partial(_call, bert_logits, theta=params, **kw)
    return Loaded(
        "bert",
        9,
        False,
        logits,
        logits,
        tokenizer,
        config.max_position_embeddings,
        {"L": config.num_hidden_layers, "H": config.num_attention_heads},
        f"BERT as Algorithm 9: L = {config.num_hidden_layers}, H = {config.num_attention_heads}",
    )


def _llama(model, tokenizer) -> Loaded:
    from ..families.llama import llama, llama_logits
    from ..families.llama_loading import llama_config, llama_from_state_dict

    config = model.config
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    theta = llama_from_state_dict(state, **llama_config(config.to_dict(), "from_hf"))
    kw = dict(theta=theta)  # θ carries RoPE's base and ε (theta.config)
    return Loaded(
        "llama",
        10,
        True,
        functools.partial(_call, llama_logits, **kw),
        functools.partial(_call, llama, **kw),
        tokenizer,
        config.max_position_embeddings,
        {"L": config.num_hidden_layers, "H": config.num_attention_heads},
        f"Llama family: L = {config.num_hidden_layers}, H = {config.num_attention_heads}, "
        f"G = {config.num_key_value_heads}",
    )


def _call(fn, x, *, theta, **kw):
    """``fn(x, θ, **kw)``: the library's argument order (θ after the sequence)."""
    return fn(x, theta, **kw)


_CONVERT = {"gpt2": _gpt2, "bert": _bert, "llama": _llama}
