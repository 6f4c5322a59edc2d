"""Paper §4, tokenization: a character-level tokenizer, the default corpus and chunking to ℓ_max.

The vocabulary is ``V ≅ [N_V]``: the characters of a text, sorted, get ids ``0 … N_V − 4`` and the
paper's three special tokens sit at the top (paper §4, 1-based ``N_V − 2, N_V − 1, N_V``), in 0-based
ids ``mask_token = N_V − 3``, ``bos_token = N_V − 2``, ``eos_token = N_V − 1``.

Chunking (the paper's §3 "chunking long texts to ≤ ℓ_max" leaves the format open; our choice): a
document becomes the token stream ``chars…, eos``, cut into consecutive pieces of at most
``ℓ_max − 1`` tokens, each piece prefixed with ``bos``. So every chunk starts with ``bos``, ``eos``
appears once, at the document's true end (never at an arbitrary cut), and no character is lost or
repeated. Concatenating the chunks without their ``bos`` gives back the stream exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

SPECIAL_NAMES = ("<mask>", "<bos>", "<eos>")


class Tokenizer:
    """What the library's tokenizers share: ``N_V`` ids with mask, bos, eos as the last three
    (0-based ``N_V − 3``, ``N_V − 2``, ``N_V − 1``), and JSON round trips of the dict
    ``{"type": TYPE, FIELD: str}`` stored in checkpoint metadata. Subclasses give ``N_V``,
    ``TYPE``, ``FIELD``, ``to_dict`` and ``from_dict``."""

    TYPE: str
    FIELD: str
    N_V: int

    @property
    def mask_token(self) -> int:
        return self.N_V - 3

    @property
    def bos_token(self) -> int:
        return self.N_V - 2

    @property
    def eos_token(self) -> int:
        return self.N_V - 1

    @classmethod
    def _decode_arguments(cls, tokens, special) -> np.ndarray:
        """``decode``'s arguments checked: ``special`` one of the three modes, ``tokens`` 1-D ids."""
        if special not in ("skip", "show", "raise"):
            raise ValueError(
                f"{cls.__name__}.decode: argument 'special' must be 'skip', 'show' or 'raise', "
                f"got {special!r}"
            )
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
            raise ValueError(
                f"{cls.__name__}.decode: argument 'tokens' must be a 1-D sequence of integer ids, "
                f"got shape {tokens.shape} and dtype {tokens.dtype}"
            )
        return tokens

    @classmethod
    def _stored(cls, d) -> str:
        """The stored string of a dict written by ``to_dict``; anything else is a ValueError."""
        if (
            not isinstance(d, dict)
            or d.get("type") != cls.TYPE
            or not isinstance(d.get(cls.FIELD), str)
        ):
            raise ValueError(
                f"{cls.__name__}.from_dict: argument 'd' must be a dict "
                f"{{'type': '{cls.TYPE}', '{cls.FIELD}': str}}, as written by to_dict"
            )
        return d[cls.FIELD]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=True)

    @classmethod
    def from_json(cls, s: str):
        return cls.from_dict(json.loads(s))


@dataclass(frozen=True)
class CharTokenizer(Tokenizer):
    """Character-level tokenizer (paper §4). ``chars``: the vocabulary's characters, in id order."""

    chars: tuple[str, ...]

    def __post_init__(self):
        chars = tuple(self.chars)
        object.__setattr__(self, "chars", chars)
        if not chars:
            raise ValueError(
                "CharTokenizer: argument 'chars' is empty; need at least one character"
            )
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"CharTokenizer: argument 'chars' holds non-characters {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: argument 'chars' holds repeated characters")
        object.__setattr__(self, "_ids", {c: i for i, c in enumerate(chars)})

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of ``text``: its distinct characters, sorted by code point."""
        if not isinstance(text, str):
            raise TypeError(
                f"CharTokenizer.from_text: argument 'text' must be str, got {type(text)}"
            )
        if not text:
            raise ValueError("CharTokenizer.from_text: argument 'text' is empty")
        return cls(tuple(sorted(set(text))))

    # The paper's vocabulary size and its special tokens (0-based ids).
    @property
    def N_V(self) -> int:
        return len(self.chars) + 3

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> np.ndarray:
        """Token ids (int32) of ``text``, optionally wrapped as ``bos, tokens…, eos`` (paper §3).

        A character outside the vocabulary raises ``ValueError`` naming it and its position.
        """
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: argument 'text' must be str, got {type(text)}")
        ids = []
        for i, c in enumerate(text):
            v = self._ids.get(c)
            if v is None:
                raise ValueError(
                    f"CharTokenizer.encode: argument 'text' contains the character {c!r} "
                    f"(U+{ord(c):04X}) at index {i}, which is not in the vocabulary"
                )
            ids.append(v)
        ids = [self.bos_token] * bos + ids + [self.eos_token] * eos
        return np.asarray(ids, dtype=np.int32)

    def decode(self, tokens, *, special: str = "skip") -> str:
        """The text of ``tokens``; ``decode(encode(s)) == s`` for every ``s`` over the vocabulary.

        ``special``: what to do with mask/bos/eos ids: ``"skip"`` (drop them), ``"show"`` (render
        them as ``<mask>``, ``<bos>``, ``<eos>``) or ``"raise"``. Ids outside ``[0, N_V)`` raise.
        """
        tokens = self._decode_arguments(tokens, special)
        out = []
        n_chars = len(self.chars)
        for i, v in enumerate(tokens.tolist()):
            if 0 <= v < n_chars:
                out.append(self.chars[v])
            elif n_chars <= v < self.N_V:
                if special == "raise":
                    raise ValueError(
                        f"CharTokenizer.decode: argument 'tokens' holds the special token "
                        f"{SPECIAL_NAMES[v - n_chars]} (id {v}) at index {i}"
                    )
                if special == "show":
                    out.append(SPECIAL_NAMES[v - n_chars])
            else:
                raise ValueError(
                    f"CharTokenizer.decode: argument 'tokens' holds id {v} at index {i}, "
                    f"outside [0, N_V = {self.N_V})"
                )
        return "".join(out)

    # Serialisation: a plain dict / JSON string (stored in checkpoint metadata).
    TYPE, FIELD = "char", "chars"

    def to_dict(self) -> dict:
        return {"type": self.TYPE, self.FIELD: "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        return cls(tuple(cls._stored(d)))


def pydoc_topics_text() -> str:
    """The default corpus: the English help texts of Python's own ``pydoc_data.topics`` (≈ 465 KB).

    Present in every standard CPython install, so nothing is downloaded. The ``topics`` values are
    joined in sorted key order with a blank line between them, so the text is deterministic for a
    given Python version.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def split_text(text: str, held_out: float = 0.1) -> tuple[str, str]:
    """``(train, held_out)``: the text cut at one position, the last ``held_out`` fraction held out.

    A contiguous cut (not a random sample of characters) keeps held-out text unseen in context.
    """
    if not 0 < held_out < 1:
        raise ValueError(f"split_text: argument 'held_out' must be in (0, 1), got {held_out}")
    cut = int(round(len(text) * (1 - held_out)))
    if cut == 0 or cut == len(text):
        raise ValueError(f"split_text: argument 'text' of length {len(text)} is too short to split")
    return text[:cut], text[cut:]


def chunk(tokens, ell_max: int, *, bos_token: int, eos_token: int | None) -> list[np.ndarray]:
    """Cut one document's token ids into sequences of at most ``ell_max`` tokens (paper §3).

    The stream ``tokens…, eos`` (no ``eos`` if ``eos_token`` is None) is cut into consecutive
    pieces of ``ell_max − 1`` tokens (the last may be shorter), and each piece becomes
    ``[bos, piece…]``. Returns a list of int32 arrays.
    """
    _check_ell_max("chunk", ell_max)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
        raise ValueError(
            f"chunk: argument 'tokens' must be a 1-D sequence of integer ids, got shape "
            f"{tokens.shape} and dtype {tokens.dtype}"
        )
    stream = tokens.astype(np.int32)
    if eos_token is not None:
        stream = np.append(stream, np.int32(eos_token))
    n = ell_max - 1
    return [
        np.concatenate([np.asarray([bos_token], np.int32), stream[i : i + n]])
        for i in range(0, len(stream), n)
    ]


def chunk_text(text: str, tokenizer: CharTokenizer, ell_max: int, *, eos: bool = True):
    """``chunk(tokenizer.encode(text), ell_max, …)`` with the tokenizer's bos and eos tokens."""
    _check_ell_max("chunk_text", ell_max)  # under this name, and before the text is encoded
    return chunk(
        tokenizer.encode(text),
        ell_max,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token if eos else None,
    )


def _check_ell_max(name: str, ell_max) -> None:
    """The ``ell_max`` of :func:`chunk` and :func:`chunk_text`, refused under ``name``: a chunk
    holds ``bos`` and at least one token."""
    if not isinstance(ell_max, (int, np.integer)) or isinstance(ell_max, bool) or ell_max < 2:
        raise ValueError(f"{name}: argument 'ell_max' must be an integer >= 2, got {ell_max!r}")
