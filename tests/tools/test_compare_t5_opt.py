"""``compare`` on T5 (Algorithm 8 with T5's substitutions) and on a Post-LN OPT (Algorithm 10 with
the paper's Post-LN layer, no line 10) (issue 30): tiny Hugging Face models built from a
configuration, every parameter re-randomised, are EQUAL to the family's algorithm in float64 (two
configurations each: T5 v1.1's gated-GELU MLP with 2 encoder and 3 decoder layers, its output
unscaled, and the original T5's ReLU MLP with its output scaled by 1/√d_e (transformers ties
lm_head to the embedding in both; tie_word_embeddings sets the scale); two sizes of Post-LN
OPT), and a departure injected into the model's code (a patched module, never a weight:
the paper's run reads the weights) is found at the paper line and layer where it happens. The
paper's side is the family's own function (``families.t5.t5_logits``, ``families.opt.opt_logits``);
the model's side is transformers'. Nothing is downloaded."""

import re

import numpy as np
import pytest
import torch
from torch_reference import randomise
from transformers import OPTConfig, OPTForCausalLM, T5Config, T5ForConditionalGeneration

from formal_algorithms.interop.compare import compare
from formal_algorithms.interop.compare.families import CLASSES

Z = np.array([0, 7, 1, 12, 5, 2, 9, 3, 4, 1])  # the encoder's tokens
X_DEC = np.array([0, 3, 5, 9, 1])  # the decoder's, from decoder_start_token_id 0
X = np.array([3, 7, 1, 12, 5, 9, 2, 8])

T5_SHAPES = {
    # v1.1: gated-GELU, no output scale (tie_word_embeddings=False), L_dec ≠ L_enc
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=2,
                 num_decoder_layers=3),
    # the original: ReLU MLP, output scaled by 1/√d_e
    "v1.0": dict(feed_forward_proj="relu", num_layers=2),
}  # fmt: skip


def t5(version):  # d_kv = 6: H·d_attn = 24 ≠ d_e = 16, as T5's own d_kv is
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=40,
        d_model=16,
        d_kv=6,
        d_ff=24,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        **T5_SHAPES[version],
    )  # fmt: skip
    model = T5ForConditionalGeneration(config)
    randomise(model, torch.Generator().manual_seed(12))
    return model.eval()


OPT_SHAPES = {
    "small": dict(hidden_size=16, ffn_dim=24, num_hidden_layers=2, num_attention_heads=4),
    "wider": dict(hidden_size=24, ffn_dim=40, num_hidden_layers=3, num_attention_heads=6),
}


def post_ln_opt(size, **extra):
    torch.manual_seed(0)
    shape = {"word_embed_proj_dim": OPT_SHAPES[size]["hidden_size"], **OPT_SHAPES[size], **extra}
    config = OPTConfig(vocab_size=40, max_position_embeddings=32, do_layer_norm_before=False,
                       **shape)  # fmt: skip
    model = OPTForCausalLM(config)
    randomise(model, torch.Generator().manual_seed(13))
    return model.eval()


def _equal(report, name, lines):
    assert report.first is None, report.table()
    assert all(row.ok for row in report.rows) and "EQUAL" in report.table()
    assert max(row.max_rel for row in report.rows) < 1e-12, report.table()
    assert name in report.table()
    assert lines <= {row.top_line for row in report.rows}, sorted({r.top_line for r in report.rows})


@pytest.mark.parametrize("version", list(T5_SHAPES))
def test_t5_is_equal_in_float64(version):
    report = compare(t5(version), X_DEC, z=Z, float64=True)
    _equal(report, "T5's", {3, 7, 8, 9, 12, 18, 19, 20, 21} | {5, 14, 16})
    L_dec = T5_SHAPES[version].get("num_decoder_layers", 2)
    assert any(row.indices.get("l") == L_dec and row.top_line == 18 for row in report.rows)
    assert len(report.rows) > 100
    own = {row.line for row in report.rows if row.algorithm == 8 and row.line == row.top_line}
    assert {5, 14, 16} <= own  # the attentions' residual sums, not their outputs
    assert any("T5LayerNorm casts its input to float32" in k for k in report.known), report.known


@pytest.mark.parametrize("size", list(OPT_SHAPES))
def test_post_ln_opt_is_equal_in_float64(size):
    report = compare(post_ln_opt(size), X, float64=True)
    _equal(report, "Post-LN", {3, 5, 6, 7, 8, 11})
    assert 10 not in {row.top_line for row in report.rows}  # OPT-350m's placement: no line 10
    assert len(report.rows) > 50


def test_post_ln_opt_through_a_padded_batch_and_its_cache():
    from formal_algorithms.interop.compare import compare_batch, compare_cached

    model = post_ln_opt("small")
    reports = compare_batch(model, [X, X[:5]], padding="left", float64=True)
    assert [r.departs for r in reports] == [False, False], reports[1].table()
    report = compare_cached(model, X, float64=True)
    assert not report.departs and len(report.rows) > 50, report.table()


def _gelu_in_decoder_layer_2(model):
    """T5 v1.1's second decoder MLP with the exact (erf) GELU where it has gelu_new (tanh)."""
    model.decoder.block[1].layer[2].DenseReluDense.act = torch.nn.GELU()


def _bidirectional_decoder_buckets(model):
    """The decoder's relative position buckets computed as the encoder's (bidirectional)."""
    model.decoder.block[0].layer[0].SelfAttention.is_decoder = False


def _eps_in_encoder_layer_2(model):
    """The RMS norm before encoder layer 2's MLP with ε = 1e-3 (the configuration: 1e-6)."""
    model.encoder.block[1].layer[1].layer_norm.variance_epsilon = 1e-3


def _output_scale_dropped(model):
    """The original T5's tied output without its 1/√d_e (undone before lm_head: d_e = 16)."""
    model.lm_head.register_forward_pre_hook(lambda module, args: (args[0] * 4.0,))


def _pre_ln_layer_1(model):
    """A Post-LN OPT's first layer normalising the branch inputs (Pre-LN) instead of the sums."""
    model.model.decoder.layers[0].do_layer_norm_before = True


def _gelu_in_layer_2(model):
    model.model.decoder.layers[1].activation_fn = torch.nn.GELU()


def _eps_after_attention_2(model):
    model.model.decoder.layers[1].self_attn_layer_norm.eps = 1e-3


def _positions_offset_1(model):
    model.model.decoder.embed_positions.offset = 1


# name -> (model, departure, (top line, algorithm, line, indices, tag), a word of the evidence)
CASES = {
    "t5-gelu-form": (lambda: t5("v1.1"), _gelu_in_decoder_layer_2,
                     (18, 8, 18, {"l": 2}, ""), "exact \\(erf\\) GELU"),
    "t5-buckets": (lambda: t5("v1.1"), _bidirectional_decoder_buckets,
                   (14, 4, 6, {"l": 1, "h": 1}, "A"), ""),
    "t5-eps": (lambda: t5("v1.0"), _eps_in_encoder_layer_2, (8, 8, 8, {"l": 2}, ""), "ε ≈ 0.001"),
    "t5-output-scale": (lambda: t5("v1.0"), _output_scale_dropped,
                        (21, 8, 21, {}, "logits"), "W_u X of its own last X"),
    "opt-pre-ln-layer": (lambda: post_ln_opt("small"), _pre_ln_layer_1,
                         (5, 4, 1, {"l": 1, "h": 1}, ""), "another input than the paper's X of "
                         "line 3"),
    "opt-gelu": (lambda: post_ln_opt("wider"), _gelu_in_layer_2, (7, 9, 7, {"l": 2}, ""),
                 "exact \\(erf\\) GELU"),
    "opt-eps": (lambda: post_ln_opt("small"), _eps_after_attention_2, (6, 9, 6, {"l": 2}, ""),
                "ε ≈ 0.001"),
    "opt-positions": (lambda: post_ln_opt("wider"), _positions_offset_1, (3, 10, 3, {}, ""), ""),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_each_departure_is_located_at_its_paper_line(case):
    build, apply, where, evidence = CASES[case]
    model = build()
    apply(model)
    kw = {"z": Z} if case.startswith("t5") else {}
    report = compare(model, X_DEC if kw else X, float64=True, **kw)
    first = report.first
    assert first is not None, f"{case} not found"
    got = (first.top_line, first.algorithm, first.line, first.indices, first.tag)
    assert got == where, first.path
    assert all(row.ok for row in report.rows[: report.rows.index(first)])
    assert "DEPARTS at" in report.table()
    assert any(re.search(evidence, e) for e in report.evidence), report.evidence


def test_what_is_not_written_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^compare: argument 'z' is needed for a T5 model"):
        compare(t5("v1.1"), X_DEC)
    opt_350m = post_ln_opt("small", word_embed_proj_dim=8)  # project_in, project_out
    with pytest.raises(ValueError, match=r"^compare: argument 'model.config.word_embed_proj_dim' "
                       r"= 8 ≠ hidden_size 16 \(OPT-350m's project_in"):  # fmt: skip
        compare(opt_350m, X)
    with pytest.raises(
        TypeError, match=r"^compare: argument 'model' must be a GPT2LMHeadModel"
    ) as e:
        compare(torch.nn.Linear(2, 2), X)
    assert all(name in str(e.value) for name in CLASSES.values()), e.value


# The command line: an encoder-decoder directory reads --context (z) and --tokens (x).


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    t5_dir, opt_dir = tmp_path_factory.mktemp("t5"), tmp_path_factory.mktemp("opt")
    t5("v1.1").save_pretrained(t5_dir)
    post_ln_opt("small").save_pretrained(opt_dir)
    return str(t5_dir), str(opt_dir)


def test_cli_compares_t5_on_a_context_and_a_post_ln_opt(directories, capsys):
    from formal_algorithms.cli.compare import ENCODER_DECODER
    from formal_algorithms.cli.main import main
    from formal_algorithms.interop.compare.families import CONTEXT

    assert ENCODER_DECODER == CONTEXT  # the command line's names, without importing torch
    t5_dir, opt_dir = directories
    context, tokens = " ".join(map(str, Z)), " ".join(map(str, X_DEC))
    argv = ["compare", "--hf", t5_dir, "--context", context, "--tokens", tokens, "--float64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "EQUAL" in out and "T5's" in out and f"context z {Z.tolist()}" in out, out
    assert main(["compare", "--hf", opt_dir, "--tokens", " ".join(map(str, X))]) == 0
    out = capsys.readouterr().out
    assert "EQUAL" in out and "Post-LN" in out, out


@pytest.mark.parametrize(
    "which, options, message",
    [
        ("t5", ["--tokens", "0 3"], r"holds a T5 model, which reads a context z besides the "
         r"tokens: give z with --context IDS"),
        ("t5", ["--context", "1 2", "--tokens", "0 3", "--cached"], r"--cached does not apply"),
        ("t5", ["--context", "1 2", "--tokens", "0 3; 0 4"], r"--tokens gives a batch"),
        ("t5", ["--context", "1 99"], r"--context holds token ids outside \[0, 40\)"),
        ("opt", ["--context", "1 2"], r"--context is the context z of an encoder-decoder model "
         r"\(bart, t5\); .* holds a 'opt' model"),
    ],
)  # fmt: skip
def test_cli_refuses_what_an_encoder_decoder_does_not_read(directories, capsys, which, options,
                                                           message):  # fmt: skip
    from formal_algorithms.cli.main import main

    directory = directories[0 if which == "t5" else 1]
    assert main(["compare", "--hf", directory, *options]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_t5s_likely_causes_are_its_own():
    """T5 divides its scores by no √d_attn and adds a relative position bias: the causes a report
    lists for its attention lines say so, and the decoders' still name √d_attn."""
    from formal_algorithms.interop.compare.causes import causes_for
    from formal_algorithms.interop.compare.families import family_for

    t5_family = family_for(t5("v1.1"), None, None, None, None, Z)
    opt_family = family_for(post_ln_opt("small"), None, None, None, None, None)
    t5_causes = " ".join(causes_for(t5_family, "attention", set(), set())[0])
    opt_causes = " ".join(causes_for(opt_family, "attention", set(), set())[0])
    assert "relative position bias" in t5_causes and "instead of √d_attn" not in t5_causes
    assert "instead of √d_attn" in opt_causes and "relative position bias" not in opt_causes
    embedding = " ".join(causes_for(t5_family, "embedding", set(), set())[0])
    assert "T5" not in embedding  # T5 does not scale its token embedding
