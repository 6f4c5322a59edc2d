"""The conformance checks that Hugging Face's own model tests make
(formal_algorithms.testing.framework_checks): eager and SDPA attention equal, generation stops at
eos, the loss's label shift, bfloat16 cached decoding within the stated drift.

- Healthy tiny Hugging Face models of every kind pass the four (or skip them for the reason
  stated); a torch module without the hooks skips three, and passes bfloat16.
- A broken model for each, not in the battery's zoo, is caught by the check named for it, with
  its message asserted: an eager path without the mask, a generate that ignores eos, a loss that
  scores each position on its own token, a cache quantised in bfloat16 (in tests/tools/zoo.py,
  run by test_conformance.py's zoo test too).
- The expectations are independent: the loss by hand is recomputed here in float64 from the
  logits; the tokens of an eos run are those of the run without eos, cut by hand.
"""

import numpy as np
import pytest
import torch
import transformers
import zoo
from torch_reference import randomise
from transformers.models.gpt2 import modeling_gpt2

from formal_algorithms.testing import adapters as A
from formal_algorithms.testing import conformance as C

NEW = ["attention_implementations", "eos", "label_shift", "bfloat16"]
IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gpt2_config():
    return transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                   **IDS)  # fmt: skip


def tiny(cls, config):
    model = cls(config)
    randomise(model.eval(), torch.Generator().manual_seed(0))
    return model


def healthy_models():
    small = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=32, **IDS)  # fmt: skip
    return {
        "gpt2": tiny(transformers.GPT2LMHeadModel, gpt2_config()),
        "qwen2": tiny(
            transformers.Qwen2ForCausalLM, transformers.Qwen2Config(**small, num_key_value_heads=1)
        ),
        "bert": tiny(transformers.BertForMaskedLM, transformers.BertConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32)),
        "t5": tiny(transformers.T5ForConditionalGeneration, transformers.T5Config(
            vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
    }  # fmt: skip


def test_healthy_models_pass_or_skip_for_a_stated_reason():
    reports = {n: C.run_battery(A.from_hf(m), checks=NEW) for n, m in healthy_models().items()}
    for name, report in reports.items():
        assert report.ok, str(report)
        skipped = {r.check: r.message for r in report.results if r.status == "skip"}
        assert skipped == (
            {
                "eos": "a masked language model does not generate",
                "bfloat16": "an encoder does not decode",
            }
            if name == "bert"
            else {}
        ), str(report)
    assert (
        "'eager' and 'sdpa' attention equal" in reports["gpt2"]["attention_implementations"].message
    )
    assert "left-padded context tokens" in reports["t5"]["attention_implementations"].message
    assert "predicts x[t+1]" in reports["qwen2"]["label_shift"].message
    assert "no shift" in reports["bert"]["label_shift"].message
    assert "[start, y[:-1]]" in reports["t5"]["label_shift"].message
    plain = C.run_battery(A.from_torch(zoo.TinyLM(), vocab_size=zoo.VOCAB), checks=NEW)
    assert [r.status for r in plain.results] == ["skip", "skip", "skip", "pass"], str(plain)


def test_the_label_shift_expectation_is_the_loss_by_hand():
    """The check's 'by hand' number equals this test's own float64 loss from the logits."""
    model = healthy_models()["gpt2"]
    x = torch.tensor([[5, 9, 3, 7, 11, 4]])
    with torch.no_grad():
        logits = model(x).logits[0].double().numpy()  # (ℓ, N_V)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    by_hand = -np.mean([log_p[t, x[0, t + 1]] for t in range(5)])
    tm = A.from_hf(model)
    assert tm.loss_from_labels(x.numpy(), x.numpy()) == pytest.approx(by_hand, rel=1e-6)
    assert C.check_label_shift(tm).startswith("loss from labels")


def test_an_eager_path_without_the_mask_is_caught(monkeypatch):
    def unmasked(module, query, key, value, attention_mask, **kwargs):
        return eager(module, query, key, value, None, **kwargs)

    eager = modeling_gpt2.eager_attention_forward
    monkeypatch.setattr(modeling_gpt2, "eager_attention_forward", unmasked)
    model = A.from_hf(tiny(transformers.GPT2LMHeadModel, gpt2_config()))
    with pytest.raises(
        C.ConformanceViolation,
        match=r"attention_implementations: with 'sdpa' attention the output at position \d+ of "
        r"row 0 differs from 'eager''s by .*mask",
    ):
        C.check_attention_implementations(model)
    assert model.module.config._attn_implementation == "sdpa"  # restored after the check


class IgnoresEos(transformers.GPT2LMHeadModel):
    """A generate that builds its own settings from the length alone: eos is dropped."""

    def generate(self, *args, generation_config=None, **kwargs):
        kwargs["max_new_tokens"] = generation_config.max_new_tokens
        kwargs.update(do_sample=False, eos_token_id=[], pad_token_id=0)
        return super().generate(*args, **kwargs)


class UnshiftedLoss(transformers.GPT2LMHeadModel):
    """A loss that scores each position on its own token (the labels not shifted)."""

    def forward(self, input_ids=None, labels=None, **kwargs):
        out = super().forward(input_ids=input_ids, **kwargs)
        if labels is not None:
            out.loss = torch.nn.functional.cross_entropy(
                out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100
            )
        return out


def test_a_generate_that_ignores_eos_is_caught():
    model = A.from_hf(tiny(IgnoresEos, gpt2_config()))
    with pytest.raises(
        C.ConformanceViolation, match=r"eos: row 0 went on after eos = \d+ at step \d+: token"
    ):
        C.check_eos(model)


def test_a_loss_without_the_label_shift_is_caught_and_named():
    model = A.from_hf(tiny(UnshiftedLoss, gpt2_config()))
    report = C.run_battery(model, checks=["label_shift"])
    result = report["label_shift"]
    assert result.status == "fail" and result.size > 0.01, str(report)
    assert "the labels are not shifted (each position scored on its own token)" in result.message


def test_a_cache_quantised_in_bfloat16_is_caught_and_float32_is_not():
    model = A.from_torch(zoo.CacheQuantisedInBfloat16(), vocab_size=zoo.VOCAB)
    report = C.run_battery(model, checks=["cache", "bfloat16"])
    assert report["cache"].status == "pass", str(report)
    assert report["bfloat16"].status == "fail", str(report)
    assert "beyond 0.03 · max |output|" in report["bfloat16"].message
    assert model.module.tok.weight.dtype == torch.float32  # the check cast a copy


def test_bad_arguments_of_the_hooks_are_named():
    model = A.from_hf(healthy_models()["gpt2"])
    with pytest.raises(ValueError, match=r"in_dtype: argument 'dtype' .*'bfloat16'"):
        model.in_dtype("float16")
    with pytest.raises(ValueError, match=r"argument 'implementation' .*\('eager', 'sdpa'\)"):
        model.logits_with_attention("flash", np.array([[3, 4]]))
