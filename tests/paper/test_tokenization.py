"""Paper §4 tokenization: special tokens at the top of V, exact round trips, serialisation, chunking."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formal_algorithms.paper.tokenization import (
    CharTokenizer,
    chunk,
    chunk_text,
    pydoc_topics_text,
    split_text,
)


@pytest.fixture(scope="module")
def corpus():
    return pydoc_topics_text()


def test_vocabulary_is_sorted_characters_with_special_tokens_on_top():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    # Paper §4 (1-based): mask = N_V − 2, bos = N_V − 1, eos = N_V; 0-based one less each.
    assert tok.N_V == 8 + 3
    assert (tok.mask_token, tok.bos_token, tok.eos_token) == (8, 9, 10)
    np.testing.assert_array_equal(tok.encode("hello"), [3, 2, 4, 4, 5])
    np.testing.assert_array_equal(tok.encode("do", bos=True, eos=True), [9, 1, 5, 10])
    assert tok.encode("do").dtype == np.int32


def test_round_trip_on_the_whole_corpus(corpus):
    tok = CharTokenizer.from_text(corpus)
    ids = tok.encode(corpus)
    assert len(ids) == len(corpus)
    assert ids.max() < tok.mask_token  # no character is mapped onto a special token
    assert tok.decode(ids) == corpus


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="abcxyz \n.é", min_size=0, max_size=40))
def test_round_trip_property(s):
    tok = CharTokenizer.from_text("abcxyz \n.é")
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode(tok.encode(s, bos=True, eos=True)) == s  # specials skipped by default


def test_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z' \(U\+007A\) at index 2"):
        tok.encode("abzc")


def test_decode_special_token_policies_and_bad_ids():
    tok = CharTokenizer.from_text("ab")
    ids = [tok.bos_token, 0, tok.mask_token, 1, tok.eos_token]
    assert tok.decode(ids) == "ab"
    assert tok.decode(ids, special="show") == "<bos>a<mask>b<eos>"
    with pytest.raises(ValueError, match="special token <bos>"):
        tok.decode(ids, special="raise")
    with pytest.raises(ValueError, match="id 5 at index 1"):
        tok.decode([0, 5])
    with pytest.raises(ValueError, match="id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="special"):
        tok.decode([0], special="drop")


def test_constructor_rejects_bad_vocabularies():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer(("a", "a"))
    with pytest.raises(ValueError, match="non-characters"):
        CharTokenizer(("ab",))


def test_serialisation_round_trip(corpus):
    tok = CharTokenizer.from_text(corpus)
    d = tok.to_dict()
    assert json.loads(json.dumps(d)) == d  # a plain JSON-able dict
    assert CharTokenizer.from_dict(d) == tok
    s = tok.to_json()
    assert isinstance(s, str) and s.isascii()
    back = CharTokenizer.from_json(s)
    assert back == tok and back.N_V == tok.N_V
    np.testing.assert_array_equal(back.encode(corpus[:1000]), tok.encode(corpus[:1000]))
    with pytest.raises(ValueError, match="from_dict"):
        CharTokenizer.from_dict({"type": "bpe"})


def test_pydoc_corpus_is_english_prose(corpus):
    assert len(corpus) > 100_000
    assert corpus == pydoc_topics_text()  # deterministic
    words = corpus.split()
    assert words.count("the") > 1000
    assert corpus.count(" ") / len(corpus) > 0.1


def test_split_text():
    text = "abcdefghij"
    train, held = split_text(text, 0.3)
    assert (train, held) == ("abcdefg", "hij")
    with pytest.raises(ValueError, match="held_out"):
        split_text(text, 1.0)
    with pytest.raises(ValueError, match="too short"):
        split_text("a", 0.1)


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 12, 13])
def test_chunking(n):
    ell_max, bos, eos = 7, 101, 102
    tokens = np.arange(n, dtype=np.int32)
    chunks = chunk(tokens, ell_max, bos_token=bos, eos_token=eos)
    assert all(c.dtype == np.int32 for c in chunks)
    assert all(2 <= len(c) <= ell_max for c in chunks)
    assert all(c[0] == bos for c in chunks)
    stream = np.concatenate([c[1:] for c in chunks])
    np.testing.assert_array_equal(stream, np.append(tokens, eos))  # nothing lost or repeated
    assert len(chunks) == -(-(n + 1) // (ell_max - 1))
    # eos only at the document's end.
    assert [int(np.sum(c == eos)) for c in chunks] == [0] * (len(chunks) - 1) + [1]


def test_chunking_without_eos_and_bad_ell_max():
    chunks = chunk(np.arange(5), 3, bos_token=9, eos_token=None)
    assert [c.tolist() for c in chunks] == [[9, 0, 1], [9, 2, 3], [9, 4]]
    assert chunk(np.arange(0), 3, bos_token=9, eos_token=None) == []
    with pytest.raises(ValueError, match="ell_max"):
        chunk(np.arange(5), 1, bos_token=9, eos_token=None)


def test_chunk_text_uses_the_tokenizer():
    tok = CharTokenizer.from_text("abc")
    chunks = chunk_text("abcab", tok, 4)
    assert [c.tolist() for c in chunks] == [[4, 0, 1, 2], [4, 0, 1, 5]]
    assert "".join(tok.decode(c) for c in chunks) == "abcab"
