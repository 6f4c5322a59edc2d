"""The conformance battery (formal_algorithms.testing.conformance) on other people's models.

- Every deliberately broken model of the zoo (tests/tools/zoo.py, one per bug class) is caught by
  the check named for its class, with the invariant, the position and the size in the message.
- Healthy models pass every check that applies: the zoo's decoders (learned, rotary and ALiBi
  positions), encoder and ``nn.Transformer``; Hugging Face GPT-2, BERT, Llama and BART with tiny
  random configs (built offline); this library's Algorithm 10 through ``from_paper``; an Equinox
  model; a numpy callable with the finite-difference gradients.
- ``formal-algorithms check --hf DIR`` on a saved model: exit 0 and the report (text, JSON);
  exit 1 on a violation; one-line errors.
"""

import json
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
import zoo
from torch_reference import randomise
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

import formal_algorithms as fa
from formal_algorithms import testing as T
from formal_algorithms.cli.main import main
from formal_algorithms.testing import adapters as A
from formal_algorithms.testing import conformance as C


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models: one thread is fastest (and the suite runs a worker per core); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def adapt(model, **options):
    return A.from_torch(model, vocab_size=zoo.VOCAB, name=type(model).__name__, **options)


def assert_passes(report, expected_passes):
    """Nothing failed, nothing warned, and at least ``expected_passes`` ran (were not skipped)."""
    assert report.ok, str(report)
    assert not any(r.warnings for r in report.results), str(report)
    passed = {r.check for r in report.results if r.status == "pass"}
    assert set(expected_passes) <= passed, str(report)


DECODER_CHECKS = ["causality", "padding_right", "padding_left", "batch", "cache",
                  "batched_generation", "distributions", "determinism"]  # fmt: skip
ENCODER_CHECKS = ["padding_right", "padding_left", "batch", "permutation", "distributions",
                  "determinism"]  # fmt: skip


# ================================================================================ the broken zoo


@pytest.mark.parametrize("bug", list(zoo.BROKEN))
def test_each_broken_model_is_caught_by_its_check(bug):
    cls, options, check = zoo.BROKEN[bug]
    report = C.run_battery(adapt(cls(), **options), checks=[check])
    result = report[check]
    assert result.status == "fail", f"{bug}: {report}"
    assert not report.ok
    assert result.message and "\n" not in result.message
    assert result.position is not None and result.position >= 0
    assert result.size is None or result.size > 0  # None: generated tokens differ


def test_violation_messages_name_invariant_position_and_size():
    with pytest.raises(C.ConformanceViolation) as info:
        C.check_causality(adapt(zoo.LeakyCausalMask()))
    v = info.value
    assert isinstance(v, AssertionError) and v.invariant == "causality"
    assert str(v).startswith("causality: the output at position 0 changed by ")
    assert "later position 1" in str(v) and v.position == 0 and v.size > 1e-3
    with pytest.raises(C.ConformanceViolation, match=r"cache: the output at position 2 .* by "):
        C.check_cache(adapt(zoo.AlibiOffsetUnderCache()))
    with pytest.raises(C.ConformanceViolation, match=r"padding_left: with 1 pad-id padding"):
        C.check_padding(adapt(zoo.PositionIdsIgnored()), "left")
    with pytest.raises(C.ConformanceViolation, match=r"at position 0 \(a padding position\)"):
        C.check_distributions(adapt(zoo.NaNOnPadding()))


def test_adapted_models_work_with_the_invariant_checkers():
    x = jnp.asarray([3, 1, 4, 1, 5, 9])
    with pytest.raises(T.InvariantViolation, match=r"check_causal_tokens: changing x\[1:\]"):
        T.check_causal_tokens(adapt(zoo.LeakyCausalMask()).as_function(), x, zoo.VOCAB)
    T.check_causal_tokens(adapt(zoo.TinyLM()).as_function(), x, zoo.VOCAB, atol=1e-6)
    probabilities = adapt(zoo.SoftmaxOverPositions(), output="probs").as_function()
    with pytest.raises(T.InvariantViolation, match="check_column_stochastic: .*wrong axis"):
        T.check_column_stochastic(probabilities(x))


def test_a_leak_too_small_to_perturb_is_caught_by_the_gradient():
    """Masked scores filled with −20 rather than −∞/finfo.min: each future token gets weight
    ~e⁻²⁰ ≈ 2e-9, invisible to perturbation at the default tolerance, not to autograd."""

    class SoftMaskConstant(zoo.TinyLM):
        def masked_scores(self, scores, allowed):
            return scores.masked_fill(~allowed, -20.0)

    with pytest.raises(C.ConformanceViolation, match=r"gradient .* later token .*torch\.autograd"):
        C.check_causality(adapt(SoftMaskConstant()))


# ================================================================================ healthy models


@pytest.mark.parametrize("pos", ["learned", "rotary", "alibi"])
def test_healthy_zoo_decoders_pass(pos):
    assert_passes(C.run_battery(adapt(zoo.TinyLM(pos=pos))), DECODER_CHECKS)


def test_healthy_zoo_encoder_and_nn_transformer_pass():
    encoder = adapt(zoo.TinyLM(pos="none", causal=False), kind="masked", positions=False)
    assert_passes(C.run_battery(encoder), ENCODER_CHECKS)
    seq2seq = adapt(zoo.TinySeq2Seq(), kind="seq2seq", positions=False)
    report = C.run_battery(seq2seq)
    assert_passes(report, ["causality", "padding_right", "padding_left", "batch", "permutation",
                           "distributions", "determinism"])  # fmt: skip
    assert "torch.autograd" in report["causality"].message
    assert report["cache"].status == "skip"


def tiny_hf_models():
    """Tiny random models, every parameter re-drawn (library initialisation is so small that the
    tokens hardly interact)."""
    torch.manual_seed(0)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2,
                                           n_head=2, **ids)),  # fmt: skip
        "bert": BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=32,
                                           max_position_embeddings=32, pad_token_id=0)),  # fmt: skip
        "roberta": RobertaForMaskedLM(RobertaConfig(  # positions start after the pad id
            vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=40, pad_token_id=1)),
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                                              num_hidden_layers=2, num_attention_heads=2,
                                              num_key_value_heads=1, max_position_embeddings=64,
                                              **ids)),  # fmt: skip
        "bart": BartForConditionalGeneration(BartConfig(
            vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
            decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)),
    }  # fmt: skip
    for model in models.values():
        randomise(model.eval(), torch.Generator().manual_seed(0))
    return models


def test_healthy_hugging_face_models_pass():
    models = tiny_hf_models()
    expected = {
        "gpt2": DECODER_CHECKS,
        "llama": DECODER_CHECKS,
        "bert": [
            "bidirectionality",
            "padding_right",
            "padding_left",
            "batch",
            "distributions",
            "determinism",
        ],
        "roberta": [
            "bidirectionality",
            "padding_right",
            "padding_left",
            "batch",
            "distributions",
            "determinism",
        ],
        "bart": [
            "causality",
            "bidirectionality",
            "padding_right",
            "batch",
            "cache",
            "distributions",
            "determinism",
        ],
    }
    for name, model in models.items():
        tm = A.from_hf(model.eval())
        assert tm.kind == {"gpt2": "causal", "llama": "causal", "bert": "masked",
                           "roberta": "masked", "bart": "seq2seq"}[name]  # fmt: skip
        report = C.run_battery(tm)
        assert_passes(report, expected[name])
        if tm.kind != "masked":
            assert "exactly 0 (torch.autograd)" in report["causality"].message, name


def test_hugging_face_model_with_a_broken_forward_is_caught():
    """GPT-2 whose wrapper drops the attention mask (what TransformerLens #1005 amounts to)."""
    gpt2 = tiny_hf_models()["gpt2"].eval()

    class DropsMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = gpt2

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            return self.inner(input_ids, position_ids=position_ids).logits

    model = A.from_torch(DropsMask(), vocab_size=40)
    with pytest.raises(C.ConformanceViolation, match="padding_left: with 1 pad-id"):
        C.check_padding(model, "left")
    with pytest.raises(
        C.ConformanceViolation, match=r"batched_generation: prompt 1 .* step 0 the logits in the"
    ):
        C.check_batched_generation(model)


# ============================================================================= JAX and callables


def test_the_papers_algorithm_10_through_from_paper_with_jax_gradients():
    theta = fa.init_d_transformer(
        jax.random.key(0), N_V=12, ell_max=16, L=1, H=2, d_e=8, d_mlp=16, dtype=jnp.float64
    )

    def from_embeddings(X, Mask_fn=fa.unidirectional_mask):
        for layer in theta.layers:
            X = fa.pre_ln_layer(X, layer, Mask_fn(X.shape[1]), fa.gelu)
        return fa.unembedding_matrix(theta) @ fa.layer_norm_columns(X, theta.gamma, theta.beta)

    def embed(x):
        return fa.embed(jnp.asarray(x), theta.W_e, theta.W_p)

    logits = jax.jit(lambda x: fa.d_transformer_logits(x, theta))  # one compilation per shape
    model = A.from_paper(logits, N_V=12, embed=embed, from_embeddings=from_embeddings,
                         max_length=16)  # fmt: skip
    report = C.run_battery(model, checks=["causality", "batch", "determinism"], length=5)
    assert_passes(report, ["causality", "batch", "determinism"])
    assert "jax.jacrev" in report["causality"].message

    def leaky(X):  # the transposed mask of test_broken_variants, seen through the gradient
        return from_embeddings(X, lambda n: fa.unidirectional_mask(n).T)

    broken = A.from_paper(jax.jit(lambda x: leaky(embed(x))), N_V=12, embed=embed,
                          from_embeddings=leaky)  # fmt: skip
    with pytest.raises(C.ConformanceViolation, match="causality: the output at position 0"):
        C.check_causality(broken, length=5)


def cached_paper_model(logits_fn, cached_logits_fn, new_cache, N_V, *, off_by=0):
    """A JAX model of this library with its own cache: ``cached_logits_fn(tokens, start, cache)``
    (``d_cached_logits``, ``llama_cached_logits``); ``off_by`` shifts the start position."""

    step = jax.jit(cached_logits_fn, static_argnums=1)  # one program per (length, start)

    def cached(tokens, state):
        start, cache = (0, new_cache()) if state is None else state
        shift = off_by if start else 0  # the prefill is right; the steps are off
        logits, cache = step(jnp.asarray(tokens), start + shift, cache)
        return logits, (start + len(tokens), cache)

    return A.from_paper(jax.jit(logits_fn), N_V=N_V, cached=cached, max_length=12)


def test_the_librarys_cached_decoders_pass_and_an_offset_cache_is_caught():
    from formal_algorithms.families import llama as fl
    from formal_algorithms.practice import cache as pc

    theta = fa.init_d_transformer(
        jax.random.key(1), N_V=12, ell_max=16, L=1, H=2, d_e=8, d_mlp=16, dtype=jnp.float64
    )
    llama = fl.init_llama(jax.random.key(2), N_V=12, L=1, H=2, G=1, d_e=8, d_mlp=16,
                          dtype=jnp.float64)  # fmt: skip
    models = {
        "Algorithm 10": (lambda x: fa.d_transformer_logits(x, theta),
                         lambda t, s, c: pc.d_cached_logits(t, s, theta, c),
                         lambda: pc.init_kv_cache(theta)),
        "Llama family": (lambda x: fl.llama_logits(x, llama),
                         lambda t, s, c: fl.llama_cached_logits(t, s, llama, c),
                         lambda: fl.init_llama_cache(llama, 16)),
    }  # fmt: skip
    for parts in models.values():  # few lengths: each compiles
        assert "4 positions through the cache" in C.check_cache(
            cached_paper_model(*parts, 12), length=4, new_tokens=2
        )
        with pytest.raises(C.ConformanceViolation, match="cache: the output at position 1"):
            C.check_cache(cached_paper_model(*parts, 12, off_by=1), length=4, new_tokens=2)


def numpy_model(leak):
    """A causal "model" in plain numpy: output t = W_u tanh(mean of e_1..e_t) + leak · e_{t+1}."""
    rng = np.random.default_rng(0)
    W_e, W_u = rng.normal(size=(10, 6)), rng.normal(size=(6, 10))

    def embed(ids):
        return W_e[np.asarray(ids)]

    def from_embeddings(E):
        prefix = np.cumsum(E, axis=0) / np.arange(1, len(E) + 1)[:, None]
        later = np.concatenate([E[1:], np.zeros_like(E[:1])])
        return np.tanh(prefix + leak * later) @ W_u

    return A.from_callable(lambda ids: from_embeddings(embed(ids)), vocab_size=10,
                           batched=False, embed=embed, from_embeddings=from_embeddings)  # fmt: skip


def test_finite_difference_fallback_finds_a_leak_below_the_perturbation_tolerance():
    report = C.run_battery(numpy_model(0.0), checks=["causality", "batch", "determinism"])
    assert_passes(report, ["causality", "batch", "determinism"])
    assert "finite differences" in report["causality"].message
    with pytest.raises(C.ConformanceViolation, match=r"later token .*\(finite differences\)"):
        C.check_causality(numpy_model(1e-6))  # |Δ| ~1e-6 < atol; the gradient ~1e-6 > 1e-7·max


def test_equinox_module():
    import equinox as eqx

    class TinyEqx(eqx.Module):
        embedding: eqx.nn.Embedding
        attention: eqx.nn.MultiheadAttention
        head: eqx.nn.Linear
        causal: bool = eqx.field(static=True)

        def __init__(self, key, causal=True):
            k1, k2, k3 = jax.random.split(key, 3)
            self.embedding = eqx.nn.Embedding(12, 8, key=k1)
            self.attention = eqx.nn.MultiheadAttention(2, 8, key=k2)
            self.head = eqx.nn.Linear(8, 12, key=k3)
            self.causal = causal

        def __call__(self, ids):
            E = jax.vmap(self.embedding)(ids)
            mask = jnp.tril(jnp.ones((len(ids), len(ids)), bool)) if self.causal else None
            return jax.vmap(self.head)(E + self.attention(E, E, E, mask=mask))

    key = jax.random.key(0)
    model = A.from_equinox(eqx.filter_jit(TinyEqx(key)), vocab_size=12)
    report = C.run_battery(model, checks=["causality", "batch", "determinism"], length=5)
    assert_passes(report, ["causality", "batch", "determinism"])
    with pytest.raises(C.ConformanceViolation, match="causality"):
        C.check_causality(A.from_equinox(eqx.filter_jit(TinyEqx(key, False)), vocab_size=12))


def test_flax_adapter_calls_apply_with_the_variables():
    """flax is not a dependency: this stand-in has Linen's ``apply(variables, ids, **kw)``."""

    class LinenLike:
        def apply(self, variables, ids, attention_mask=None):
            E = variables["params"]["embedding"][np.asarray(ids)]  # (B, ℓ, d)
            if attention_mask is not None:
                E = E * np.asarray(attention_mask)[..., None]
            return np.cumsum(E, axis=1) @ variables["params"]["head"]

    rng = np.random.default_rng(0)
    variables = {"params": {"embedding": rng.normal(size=(9, 4)), "head": rng.normal(size=(4, 9))}}
    model = A.from_flax(LinenLike(), variables, vocab_size=9, accepts=("attention_mask",))
    assert model.accepts_attention_mask and not model.accepts_position_ids
    report = C.run_battery(model, checks=["causality", "padding_right", "padding_left", "batch"])
    assert_passes(report, ["causality", "padding_right", "padding_left", "batch"])


# ================================================================================ the report, errors


def test_report_is_json_and_text():
    report = C.run_battery(adapt(zoo.CachePositionOffByOne()), checks=["causality", "cache",
                                                                       "permutation"])  # fmt: skip
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["counts"] == {
        "pass": 1,
        "fail": 1,
        "skip": 1,
        "error": 0,
        "not meaningful": 0,
    }
    cache = next(r for r in data["results"] if r["check"] == "cache")
    assert cache["status"] == "fail" and cache["position"] == 2 and cache["size"] > 0.01
    assert cache["invariant"] == C.INVARIANTS["cache"]
    text = str(report)
    assert "FAIL  cache" in text and "PASS  causality" in text and "SKIP  permutation" in text
    assert text.endswith(
        "1 passed, 1 failed, 1 skipped, 0 errors, 0 not meaningful: VIOLATES the invariants above"
    )


def test_a_check_that_crashes_is_an_error_in_the_report_and_warnings_are_recorded():
    class Crashes(torch.nn.Module):
        def forward(self, input_ids):
            warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
            raise RuntimeError("boom")

    report = C.run_battery(A.from_torch(Crashes(), vocab_size=5), checks=["batch"])
    result = report["batch"]
    assert result.status == "error" and result.message == "ℓ = 8: RuntimeError: boom"
    assert result.warnings == ["FutureWarning: deprecated thing"] and not report.ok


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="from_torch: argument 'module' must be a torch.nn.Module"):
        A.from_torch(lambda ids: ids, vocab_size=5)
    with pytest.raises(ValueError, match="from_torch: argument 'kind' must be one of"):
        A.from_torch(zoo.TinyLM(), vocab_size=5, kind="decoder")
    with pytest.raises(
        ValueError, match="from_callable: argument 'vocab_size' must be an integer ≥ 2"
    ):
        A.from_callable(lambda ids: ids, vocab_size=1)
    with pytest.raises(ValueError, match="run_battery: argument 'checks' \\['nope'\\] unknown"):
        C.run_battery(adapt(zoo.TinyLM()), checks=["nope"])
    with pytest.raises(TypeError, match="run_battery: argument 'model' must be a TokenModel"):
        C.run_battery(zoo.TinyLM())
    with pytest.raises(ValueError, match="TinyLM.logits: argument 'x' must be integer token ids"):
        adapt(zoo.TinyLM()).logits(np.zeros((1, 3)))


# ============================================================================= the command line


def test_cli_check_on_a_saved_model(tmp_path, capsys):
    models = tiny_hf_models()
    gpt2_dir, bert_dir = tmp_path / "gpt2", tmp_path / "bert"
    models["gpt2"].save_pretrained(gpt2_dir)
    models["bert"].save_pretrained(bert_dir)
    capsys.readouterr()

    assert main(["check", "--hf", str(gpt2_dir)]) == 0
    out = capsys.readouterr().out
    assert "PASS  causality" in out and "PASS  cache" in out and out.rstrip().endswith("conforms")

    assert main(["check", "--hf", str(gpt2_dir), "--json", "--checks", "batch,cache"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and [r["check"] for r in data["results"]] == ["batch", "cache"]

    # BERT declared causal: a bidirectional encoder violates causality, exit status 1
    assert main(["check", "--hf", str(bert_dir), "--kind", "causal", "--checks", "causality"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL  causality +ℓ = 8: the output at position 0 changed by", out), out

    assert main(["check", "--hf", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("formal-algorithms: error: --hf") and err.count("\n") == 1
    assert main(["check", "--hf", str(gpt2_dir), "--checks", "causality,typo"]) == 1
    assert "--checks: unknown ['typo']" in capsys.readouterr().err
    assert main(["check", "--hf", str(gpt2_dir), "--checks", ","]) == 1
    assert "--checks ',' names no check" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # the parser refuses it, before any load
        main(["check", "--hf", str(gpt2_dir), "--atol", "nan"])
    assert "--atol must be a finite number > 0, got nan" in capsys.readouterr().err
    # issue 29: a kind transformers cannot build, and more positions than the model has
    assert main(["check", "--hf", str(bert_dir), "--kind", "seq2seq"]) == 1
    assert (
        "--kind seq2seq: transformers builds no seq2seq model of the 'bert' in --hf"
        in (err := capsys.readouterr().err)
        and "(it builds: causal, masked)" in err
    )
    assert main(["check", "--hf", str(gpt2_dir), "--length", "100000"]) == 1
    assert "--length 100000 is more than the model's" in capsys.readouterr().err
    # every check asked for skipped: nothing verified, exit status 3, never "conforms"
    assert main(["check", "--hf", str(gpt2_dir), "--checks", "permutation"]) == 3
    assert "NOT VERIFIED: no check passed" in capsys.readouterr().out


# =================================================================== preconditions and verdicts (#28)


def test_a_nan_row_fails_the_finite_precondition_first_and_voids_the_comparisons():
    report = C.run_battery(adapt(zoo.NaNHeadRow()))
    first = report.preconditions[0]
    assert first.check == "finite" and first.status == "fail", str(report)
    assert first.message.startswith("the output at position 0 of an unpadded input is not finite")
    assert "vocabulary entry 3; 1 of 24 entries affected" in first.message
    assert report.preconditions[1].status == "skip"
    for check in ("causality", "padding_left", "batch", "cache", "determinism"):
        assert report[check].status == "not meaningful", str(report)
        assert report[check].message == (
            "not meaningful: precondition 'finite' failed (outputs on an ordinary unpadded input "
            "are finite does not hold)"
        )
    text = str(report)
    assert text.splitlines()[1].startswith("  FAIL  finite") and "N/M   causality" in text
    assert text.endswith("PRECONDITION FAILED (first lines): the checks marked N/M are not "
                         "meaningful")  # fmt: skip
    assert report.verdict == "violates" and not report.ok


def test_dropout_on_fails_the_deterministic_precondition_first():
    report = C.run_battery(adapt(zoo.DropoutAlwaysOn()), checks=["causality", "determinism"])
    pre = report["deterministic"]
    assert report.preconditions[0].status == "pass" and pre.status == "fail", str(report)
    assert pre.message.startswith("two forward passes on the same input differ at position")
    assert "is dropout on" in pre.message
    assert report["causality"].status == "not meaningful"
    assert "precondition 'deterministic' failed" in report["causality"].message
    assert report["determinism"].status == "fail"
    assert str(report).splitlines()[2].startswith("  FAIL  deterministic")


def test_a_report_with_no_passing_check_never_conforms():
    report = C.run_battery(adapt(zoo.TinyLM()), checks=["permutation"])
    assert report["permutation"].status == "skip" and report.verdict == "unverified"
    assert not report.ok and "NOT VERIFIED: no check passed" in str(report)
    assert json.loads(report.to_json())["verdict"] == "unverified"


def test_an_output_wider_than_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"WideHead: argument 'output' has shape \(1, 3, 26\); "
                       r"expected \(B, ℓ, N_V\) = \(1, 3, 24\)"):  # fmt: skip
        adapt(zoo.WideHead()).logits(np.zeros((1, 3), int))
    report = C.run_battery(adapt(zoo.WideHead()), checks=["batch"])
    assert report["finite"].status == "error" and "has shape" in report["finite"].message
    assert report["batch"].status == "error" and not report.ok


def test_a_model_returning_a_string_is_one_clear_line():
    model = A.from_callable(lambda ids: "logits", vocab_size=5)
    with pytest.raises(TypeError, match=r"^<lambda>: argument 'output' is \w+ 'logits'; expected "
                       r"an array of logits \(B, ℓ, N_V\)$"):  # fmt: skip
        model.logits(np.zeros((1, 3), int))


@pytest.mark.parametrize("atol", [float("nan"), 0.0, -1.0, float("inf")])
def test_a_bad_tolerance_is_refused(atol):
    with pytest.raises(ValueError, match=r"run_battery: argument 'atol' must be a finite number"):
        C.run_battery(adapt(zoo.TinyLM()), atol=atol)


def test_an_empty_check_list_is_refused():
    with pytest.raises(ValueError, match=r"run_battery: argument 'checks' is empty; choose from"):
        C.run_battery(adapt(zoo.TinyLM()), checks=[])


def test_bert_with_is_decoder_fails_bidirectionality():
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32, is_decoder=True)  # fmt: skip
    torch.manual_seed(0)
    model = A.from_hf(transformers.BertForMaskedLM(config).eval(), kind="masked")
    report = C.run_battery(model, checks=["causality", "bidirectionality", "batch"])
    result = report["bidirectionality"]
    assert result.status == "fail" and not report.ok, str(report)
    assert result.message.startswith("ℓ = 8: the output at position 0 did not move at all when the token "
                                     "at position 1 changed")  # fmt: skip
    assert "tested by the bidirectionality check" in report["causality"].message


def test_the_padding_gradient_runs_on_every_case():
    model = adapt(zoo.SoftMaskForOnePad())
    with pytest.raises(C.ConformanceViolation, match=r"^padding_left: the output at real position "
                       r"0 has gradient .* padding token at input position 0 \(torch\.autograd\)"):  # fmt: skip
        C.check_padding(model, "left", amounts=(1, 3))
    # its 3-token case alone is healthy: the leak is seen only when the 1-token case is checked
    assert "on each, gradients" in C.check_padding(model, "left", amounts=(3,))


def test_a_sampler_that_ignores_its_seed_is_not_blamed_on_the_cache():
    report = C.run_battery(adapt(zoo.UnseededSampler()), checks=["cache", "determinism"])
    assert report["cache"].status == "pass", str(report)
    assert (
        "sampled generation not compared: two sampled generations with seed 0 and the cache "
        "differ (the sampler ignores its seed: see determinism)" in report["cache"].message
    )
    assert report["determinism"].status == "fail"
    assert "two sampled generations with seed 0 differ" in report["determinism"].message


def test_a_leak_beyond_16_tokens_is_caught_by_the_long_probe():
    model = adapt(zoo.LeakBeyond16())
    assert C.probe_lengths(model) == [8, 20]  # from_torch declares no maximum
    assert C.check_causality(model, length=8).startswith("8 positions")
    report = C.run_battery(model, checks=["causality"])
    result = report["causality"]
    assert result.status == "fail" and not report.ok, str(report)
    assert result.message.startswith("ℓ = 20: the output at position 0 changed by ")
    assert "later position 1" in result.message


def test_probe_lengths_include_the_declared_boundaries():
    model = adapt(zoo.TinyLM())
    model.sliding_window = 4
    assert C.probe_lengths(model, 6) == [5, 6, 20]
    model.max_length = 12
    assert C.probe_lengths(model) == [5, 8, 12]
    model.max_length = 100  # beyond BOUNDARY_LIMIT: not probed
    assert C.probe_lengths(model) == [5, 8, 20]


def test_more_healthy_hugging_face_families_raise_no_false_alarm():
    """GPT-NeoX, OPT, Qwen2, Mistral with a sliding window of 4 (probed at 5 tokens), T5."""
    torch.manual_seed(0)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    small = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 32, **ids}  # fmt: skip
    models = {
        "gpt_neox": transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**small)),
        "opt": transformers.OPTForCausalLM(transformers.OPTConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
            max_position_embeddings=32, word_embed_proj_dim=16, **ids)),
        "qwen2": transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
            **small, num_key_value_heads=1)),
        "mistral": transformers.MistralForCausalLM(transformers.MistralConfig(
            **small, num_key_value_heads=1, sliding_window=4)),
        "t5": transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
    }  # fmt: skip
    for name, model in models.items():
        randomise(model.eval(), torch.Generator().manual_seed(0))
        tm = A.from_hf(model)
        report = C.run_battery(tm)
        expected = ["causality", "batch", "cache", "distributions", "determinism"]
        assert_passes(report, expected + (["batched_generation"] if name != "t5" else []))
        assert name != "mistral" or (tm.sliding_window == 4 and 5 in C.probe_lengths(tm))


class XTransformer(torch.nn.Module):
    """x-transformers (a third-party package of transformer code): a rotary decoder, or an
    ``Encoder`` stack mistakenly used as a decoder (``causal=False``)."""

    def __init__(self, causal=True):
        super().__init__()
        with (
            warnings.catch_warnings()
        ):  # its import uses torch.jit.script, deprecated in torch 2.13
            warnings.simplefilter("ignore", DeprecationWarning)
            import x_transformers
        torch.manual_seed(0)
        stack = x_transformers.Decoder if causal else x_transformers.Encoder
        self.net = x_transformers.TransformerWrapper(
            num_tokens=40, max_seq_len=32, use_abs_pos_emb=False,
            attn_layers=stack(dim=16, depth=2, heads=2, rotary_pos_emb=True),
        )  # fmt: skip
        randomise(self.eval(), torch.Generator().manual_seed(0))

    def forward(self, input_ids, attention_mask=None):
        return self.net(input_ids, mask=None if attention_mask is None else attention_mask.bool())


def test_x_transformers_decoder_passes_and_its_encoder_as_a_decoder_is_caught():
    report = C.run_battery(A.from_torch(XTransformer(), vocab_size=40, name="x-transformers"))
    assert_passes(report, ["causality", "padding_right", "padding_left", "batch",
                           "batched_generation", "distributions", "determinism"])  # fmt: skip
    broken = A.from_torch(XTransformer(causal=False), vocab_size=40)
    report = C.run_battery(broken, checks=["causality"])
    assert report["causality"].message.startswith("ℓ = 8: the output at position 0 changed by ")


def test_from_hf_of_neither_a_model_nor_a_path_is_a_type_error():
    with pytest.raises(TypeError, match=r"from_hf: argument 'model' must be a Hugging Face model "
                       r"or a directory path, got object"):  # fmt: skip
        A.from_hf(object())
