"""``compare`` on the families beyond GPT-2, BERT and Llama (issue 30): tiny Hugging Face Qwen2,
Mistral and Gemma models, every parameter re-randomised, are EQUAL to their families' Algorithm 10 in
float64, and a departure injected into each is located at the paper line where it happens. The
Mistral model's window (w = 3) is shorter than the sequence (ℓ = 8), so the window's mask
matters in every layer. The departures are the catalogue's Llama-architecture patches
(:data:`interop.departures.DEPARTURES`, the module names being Llama's: ε in Qwen2's last layer), and one written here:
Mistral's window dropped in layer 1, and Gemma's √d_e embedding scale dropped (a Gemma run as
Llama would embed). Gemma's RMSnorm multiplies by 1 + γ and casts to float32 with ``.float()``:
the float64 run computes it in float64 with the offset (else every norm line would differ at
float32's resolution). Nothing is downloaded."""

import re

import numpy as np
import pytest
import torch
from torch_reference import randomise
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GemmaConfig,
    GemmaForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from formal_algorithms.interop.compare import compare
from formal_algorithms.interop.departures import DEPARTURES, inject

X = np.array([3, 7, 1, 12, 5, 9, 2, 8])
SHAPE = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=24, max_position_embeddings=32,
             rms_norm_eps=1e-5)  # fmt: skip


def qwen2():
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE))
    randomise(model, torch.Generator().manual_seed(4))
    return model.eval()


def mistral():
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(sliding_window=3, **SHAPE))
    randomise(model, torch.Generator().manual_seed(5))
    return model.eval()


def gemma():
    torch.manual_seed(0)
    config = GemmaConfig(head_dim=6, hidden_activation="gelu_pytorch_tanh", **SHAPE)
    model = GemmaForCausalLM(config)  # head_dim 6, not d_e / H = 4
    randomise(model, torch.Generator().manual_seed(6))
    return model.eval()


def opt(pre_ln=True):
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=40, hidden_size=16, ffn_dim=24, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=32, word_embed_proj_dim=16,
                       do_layer_norm_before=pre_ln)  # fmt: skip
    model = OPTForCausalLM(config)
    randomise(model, torch.Generator().manual_seed(7))
    return model.eval()


def gpt_neox(parallel=True):
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=24, rotary_pct=0.5,
                           max_position_embeddings=32, use_parallel_residual=parallel)  # fmt: skip
    model = GPTNeoXForCausalLM(config)  # d_rot = 2 of each head's 4 rows
    randomise(model, torch.Generator().manual_seed(8))
    return model.eval()


def phi():
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=24, partial_rotary_factor=0.5,
                       max_position_embeddings=32)  # fmt: skip
    model = PhiForCausalLM(config)
    randomise(model, torch.Generator().manual_seed(9))
    return model.eval()


MODELS = {"qwen2": qwen2, "mistral": mistral, "gemma": gemma, "opt": opt, "gpt_neox": gpt_neox,
          "gpt_neox_sequential": lambda: gpt_neox(parallel=False), "phi": phi}  # fmt: skip


@pytest.fixture(scope="module", params=list(MODELS))
def equal_report(request):
    return request.param, compare(MODELS[request.param](), X, float64=True)


def test_unmodified_models_are_equal_in_float64(equal_report):
    family, report = equal_report
    assert report.first is None, report.table()
    assert all(row.ok for row in report.rows) and len(report.rows) > 40
    assert "EQUAL" in report.table()
    names = {"qwen2": "Qwen2's", "mistral": "Mistral's", "gemma": "Gemma's", "opt": "OPT's",
             "gpt_neox": "GPT-NeoX's", "gpt_neox_sequential": "GPT-NeoX's", "phi": "Phi's"}  # fmt: skip
    assert names[family] in report.table()


def _window_dropped(model):
    """Layer 1's attention sees every earlier token (the causal mask, not the window's)."""

    def hook(module, args, kwargs):
        mask = kwargs["attention_mask"]
        T = mask.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        blocked = torch.full_like(mask, torch.finfo(mask.dtype).min)
        kwargs["attention_mask"] = torch.where(causal, torch.zeros_like(mask), blocked)
        return args, kwargs

    model.model.layers[0].self_attn.register_forward_pre_hook(hook, with_kwargs=True)


def _scale_dropped(model):
    """Gemma's embedding without its √d_e (Llama's line 2)."""
    with torch.no_grad():
        model.model.embed_tokens.embed_scale.fill_(1.0)


def _gelu_in_layer_1(model):
    """OPT's first MLP with GELU where OPT (and the family) has ReLU."""
    model.model.decoder.layers[0].activation_fn = torch.nn.GELU()


def _positions_offset_1(model):
    """OPT's learned positions read one row too early (offset 1 instead of 2)."""
    model.model.decoder.embed_positions.offset = 1


def _parallel_layer_2(model):
    """A sequential GPT-NeoX's second layer run as the parallel block: line 7's norm reads X
    before the attention's residual sum, so the model has no line 6 (X + attention) where the
    table reads it (that norm's input)."""
    model.gpt_neox.layers[1].use_parallel_residual = True


def _sequential_layer_1(model):
    """GPT-NeoX's first layer with the sequential residual: line 7 reads X after line 6."""
    model.gpt_neox.layers[0].use_parallel_residual = False


def _exact_gelu_in_layer_2(model):
    """Phi's second MLP with the exact (erf) GELU where Phi has gelu_new (tanh)."""
    model.model.layers[1].mlp.activation_fn = torch.nn.GELU()


def _catalogue(name):
    return lambda model: DEPARTURES[name].apply(model, "llama")


# family, departure -> (top line, algorithm, line, indices, tag)
CASES = {
    ("qwen2", "eps"): (7, 10, 7, {"l": 2}, "", _catalogue("eps")),
    ("mistral", "window-dropped"): (6, 4, 6, {"l": 1, "h": 1}, "A", _window_dropped),
    ("gemma", "scale-dropped"): (3, 10, 3, {}, "", _scale_dropped),
    ("gemma", "eps"): (7, 10, 7, {"l": 2}, "", _catalogue("eps")),
    ("opt", "gelu-in-layer-1"): (8, 10, 8, {"l": 1}, "", _gelu_in_layer_1),
    ("opt", "positions-offset-1"): (3, 10, 3, {}, "", _positions_offset_1),
    ("gpt_neox", "sequential-layer-1"): (7, 10, 7, {"l": 1}, "", _sequential_layer_1),
    ("gpt_neox_sequential", "parallel-layer-2"): (6, 10, 6, {"l": 2}, "", _parallel_layer_2),
    ("phi", "exact-gelu-layer-2"): (8, 10, 8, {"l": 2}, "", _exact_gelu_in_layer_2),
}


@pytest.mark.parametrize("family, departure", list(CASES), ids=[f"{f}-{d}" for f, d in CASES])
def test_each_departure_is_located_at_its_paper_line(family, departure):
    top_line, algorithm, line, indices, tag, apply = CASES[family, departure]
    model = MODELS[family]()
    apply(model)
    report = compare(model, X, float64=True)
    first = report.first
    assert first is not None, f"{departure} not found"
    assert (first.top_line, first.algorithm, first.line, first.indices, first.tag) == (
        top_line, algorithm, line, indices, tag,
    ), first.path  # fmt: skip
    i = report.rows.index(first)
    assert all(row.ok for row in report.rows[:i])
    assert "DEPARTS at" in report.table()


# Llama's catalogue entries through inject() on Qwen2 and Mistral (Llama's module tree): each is
# found where test_compare's CATALOGUE finds it in Llama, with the same evidence (a sample of
# the entries, split between the two, to keep the suite's time).
KIN = {
    "qwen2": ("rope-base", "kv-tiled", "gate-up-swapped", "rms-plus-one", "untied", "scale-d"),
    "mistral": (
        "final-norm-missing",
        "rope-offset",
        "rms-centred",
        "temperature",
        "embedding-scaled",
    ),
}


KIN_CASES = [(f, d) for f, ds in KIN.items() for d in ds]


@pytest.mark.parametrize("family, departure", KIN_CASES, ids=[f"{f}-{d}" for f, d in KIN_CASES])
def test_llama_departures_inject_into_qwen2_and_mistral(family, departure):
    from test_compare import CATALOGUE

    top_line, algorithm, line, indices, tag, evidence = CATALOGUE["llama", departure]
    report = compare(inject(MODELS[family](), departure), X)
    first = report.first
    assert first is not None, f"{departure} not found"
    assert (first.top_line, first.algorithm, first.line, first.indices, first.tag) == (
        top_line, algorithm, line, indices, tag,
    ), first.path  # fmt: skip
    assert any(re.search(evidence, e) for e in report.evidence), report.evidence


# BART: Algorithm 8 with its embeddings inside the model, compared on a context z and tokens x.
Z = np.array([0, 7, 1, 12, 5, 2])
X_DEC = np.array([2, 0, 5, 9])


def bart():
    torch.manual_seed(0)
    config = BartConfig(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=24,
                        decoder_ffn_dim=24, max_position_embeddings=32)  # fmt: skip
    model = BartForConditionalGeneration(config)
    randomise(model, torch.Generator().manual_seed(10))
    return model.eval()


def test_bart_is_equal_in_float64_and_its_departures_are_located():
    report = compare(bart(), X_DEC, z=Z, float64=True)
    assert report.first is None, report.table()
    assert len(report.rows) > 40 and "BART's" in report.table()
    model = bart()
    model.model.decoder.layers[0].activation_fn = torch.nn.ReLU()  # BART's GELU → ReLU
    first = compare(model, X_DEC, z=Z, float64=True).first
    assert (first.algorithm, first.line, first.indices) == (8, 18, {"l": 1}), first.path
    model = bart()
    model.model.encoder.embed_positions.offset = 1  # positions read one row early
    first = compare(model, X_DEC, z=Z, float64=True).first
    assert (first.algorithm, first.line, first.indices) == (8, 3, {}), first.path
    with pytest.raises(ValueError, match=r"^compare: argument 'z' is needed for a BART model"):
        compare(bart(), X_DEC)


def test_inject_refuses_a_family_without_llamas_modules():
    with pytest.raises(TypeError, match=r"inject: argument 'model'.*GemmaForCausalLM"):
        inject(MODELS["gemma"](), "eps")
