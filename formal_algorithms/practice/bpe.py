"""Paper §4, subword tokenization: byte-level BPE through Hugging Face ``tokenizers``, trained
locally on the corpus, with the paper's special tokens at the top of the vocabulary.

- **Byte level.** Text is split with the GPT-2 pre-tokenizer regex and mapped to bytes before
  BPE merges, and the initial alphabet holds all 256 bytes. So every string encodes (no unknown
  token, whatever the script), and ``decode(encode(s)) == s`` exactly: whitespace runs, tabs,
  newlines and non-ASCII characters included.
- **Special tokens outside the HF model.** The trained BPE has ``N_V − 3`` ids; ``mask_token``,
  ``bos_token``, ``eos_token`` are ``N_V − 3, N_V − 2, N_V − 1`` (0-based, as the paper numbers them
  1-based) and live in this wrapper only. Registering them with ``tokenizers`` would make the text
  ``"<eos>"`` encode as the special token, breaking the round trip of text that contains it.
- **Serialisation.** :meth:`BPETokenizer.to_dict` holds the HF tokenizer's JSON, so a checkpoint's
  metadata restores the exact tokenizer (:func:`tokenizer_from_dict` dispatches on ``type``).

Imports ``tokenizers`` (the ``train`` extra); the core package does not import this module.
"""

from __future__ import annotations

import numpy as np

from ..paper.tokenization import SPECIAL_NAMES, CharTokenizer, Tokenizer


class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer (paper §4) with mask/bos/eos as the last three ids."""

    def __init__(self, hf_tokenizer):
        self._hf = hf_tokenizer
        self._n = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        if self._n < 1:
            raise ValueError("BPETokenizer: argument 'hf_tokenizer' has an empty vocabulary")

    @classmethod
    def train(cls, text: str, vocab_size: int = 512, *, min_frequency: int = 2) -> BPETokenizer:
        """Train byte-level BPE on ``text`` so that ``N_V ≤ vocab_size`` (3 ids go to the specials).

        ``vocab_size`` must leave room for the 256 byte tokens: at least 259. The result may be
        smaller than asked when the text offers fewer merges.
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train: argument 'text' must be str, got {type(text)}")
        if not text:
            raise ValueError("BPETokenizer.train: argument 'text' is empty")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 259:
            raise ValueError(
                f"BPETokenizer.train: argument 'vocab_size' must be an integer >= 259 "
                f"(256 bytes + mask, bos, eos), got {vocab_size!r}"
            )
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 3,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        lines = text.splitlines(keepends=True)  # the pre-tokenizer never merges across these
        hf.train_from_iterator(lines, trainer=trainer, length=len(lines))
        return cls(hf)

    # The paper's vocabulary size and its special tokens (0-based ids).
    @property
    def N_V(self) -> int:
        return self._n + 3

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> np.ndarray:
        """Token ids (int32) of ``text``, optionally wrapped as ``bos, tokens…, eos``."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: argument 'text' must be str, got {type(text)}")
        ids = self._hf.encode(text, add_special_tokens=False).ids if text else []
        ids = [self.bos_token] * bos + list(ids) + [self.eos_token] * eos
        return np.asarray(ids, dtype=np.int32)

    def decode(self, tokens, *, special: str = "skip") -> str:
        """The text of ``tokens``; ``decode(encode(s)) == s`` for every string ``s``.

        ``special`` as :meth:`CharTokenizer.decode`: ``"skip"``, ``"show"`` or ``"raise"``. A
        prefix of a token sequence may end inside a multi-byte character; its partial bytes
        decode to U+FFFD (see :func:`stream_text` for streaming).
        """
        tokens = self._decode_arguments(tokens, special)
        out, run = [], []  # runs of ordinary ids are decoded together (bytes span tokens)
        for i, v in enumerate(tokens.tolist()):
            if 0 <= v < self._n:
                run.append(v)
                continue
            if not self._n <= v < self.N_V:
                raise ValueError(
                    f"BPETokenizer.decode: argument 'tokens' holds id {v} at index {i}, "
                    f"outside [0, N_V = {self.N_V})"
                )
            if special == "raise":
                raise ValueError(
                    f"BPETokenizer.decode: argument 'tokens' holds the special token "
                    f"{SPECIAL_NAMES[v - self._n]} (id {v}) at index {i}"
                )
            out.append(self._hf.decode(run, skip_special_tokens=False))
            run = []
            if special == "show":
                out.append(SPECIAL_NAMES[v - self._n])
        out.append(self._hf.decode(run, skip_special_tokens=False))
        return "".join(out)

    TYPE, FIELD = "bpe", "tokenizer"

    def to_dict(self) -> dict:
        return {"type": self.TYPE, self.FIELD: self._hf.to_str()}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        from tokenizers import Tokenizer

        stored = cls._stored(d)
        try:
            return cls(Tokenizer.from_str(stored))
        except Exception as error:  # tokenizers raises its own Exception type on bad JSON
            raise ValueError(
                f"BPETokenizer.from_dict: the stored tokenizer does not load ({error})"
            ) from None


def tokenizer_from_dict(d) -> CharTokenizer | BPETokenizer:
    """The tokenizer stored in a checkpoint (``to_dict()`` of either tokenizer)."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "bpe":
        return BPETokenizer.from_dict(d)
    raise ValueError(
        f"tokenizer_from_dict: argument 'd' must be a tokenizer's to_dict() with type 'char' or "
        f"'bpe', got type {kind!r}"
    )


def stream_text(tokenizer, tokens):
    """Yield the text of ``tokens`` piece by piece as they arrive, such that the pieces join to
    ``tokenizer.decode(tokens)`` (special tokens skipped). Text is held back while it ends in an
    incomplete multi-byte character (BPE tokens may split one)."""
    seen, printed = [], ""
    for token in tokens:
        seen.append(int(token))
        text = tokenizer.decode(seen)
        stable = text.rstrip("\ufffd")  # an unfinished UTF-8 sequence decodes to U+FFFD
        if len(stable) > len(printed) and stable.startswith(printed):
            yield stable[len(printed) :]
            printed = stable
    text = tokenizer.decode(seen)
    if len(text) > len(printed):  # the rest, including a genuine trailing U+FFFD
        yield text[len(printed) :]
