"""The text a training command learns from: the ``--text`` file or Python's own help texts, its
tokenizer, its chunks of at most ℓ_max tokens, and the unigram entropy a model must beat."""

from __future__ import annotations

import pathlib

import numpy as np

from ..paper.tokenization import CharTokenizer, chunk_text, pydoc_topics_text


def read_text(path: str | None) -> tuple[str, str]:
    """``(text, description)``: the ``--text`` file, or the default corpus."""
    if path is None:
        return pydoc_topics_text(), "Python's pydoc_data/topics help texts"
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--text file {path!r} does not exist")
    if p.is_dir():
        raise ValueError(f"--text {path!r} is a directory; give a text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"--text file {path!r} is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    if not text.strip():
        raise ValueError(f"--text file {path!r} is empty")
    return text, f"{path} ({p.stat().st_size:,} bytes)"


def make_tokenizer(kind: str, text: str, train_text: str, vocab_size: int):
    """Character level (the vocabulary of the whole text, so that the held-out part encodes) or
    byte-level BPE trained on the training part only (it encodes any text)."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    from ..practice.bpe import BPETokenizer

    return BPETokenizer.train(train_text, vocab_size)


def chunks(text, tokenizer, ell_max, what):
    """Paper §3's chunking to ℓ_max (:func:`~.tokenization.chunk_text`); only full-length chunks
    are kept when there are any, so every batch has one shape and the step compiles once."""
    chunks = chunk_text(text, tokenizer, ell_max)
    full = [c for c in chunks if len(c) == ell_max]
    chunks = full or chunks
    if not chunks or max(len(c) for c in chunks) < 2:
        raise ValueError(f"the {what} text is too short to make a training sequence")
    return chunks


def unigram_entropy(sequences) -> float:
    """Entropy (nats) of the token frequencies of the predicted tokens (all but each ``bos``)."""
    counts = np.bincount(np.concatenate([s[1:] for s in sequences]))
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))
