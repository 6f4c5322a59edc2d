"""Issue 29's third held-back catalogue (scratch/H29third): each case was not clear before its fix
(a raw Python error, an inner function's name, an argument the caller never passed, or accepted
without a word) and now raises the stated exception whose message names the function (or the
algorithm's label, or the option as typed) and the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_error_catalogue_tools import Case, _expect

import formal_algorithms as fa
from formal_algorithms.families import (
    albert,
    bart,
    bert,
    gemma,
    gpt_neox,
    llama,
    mistral,
    opt,
    phi,
    qwen2,
    t5,
)
from formal_algorithms.families.llama_loading import llama_config, llama_from_state_dict
from formal_algorithms.practice import cache
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint
from formal_algorithms.practice.fit import fit
from formal_algorithms.testing import check_vmap, from_paper, probe_lengths, run_battery
from formal_algorithms.trace.html import write_html
from formal_algorithms.variants import factorised, placement

KEY = jax.random.key(0)
THETA = fa.init_d_transformer(KEY, N_V=7, ell_max=8, L=1, H=2, d_e=4, d_mlp=8)
E_THETA = fa.init_e_transformer(KEY, N_V=7, ell_max=8, L=1, H=2, d_e=4, d_mlp=8)
x = jnp.asarray([1, 2, 3])
MODEL = from_paper(lambda x: fa.d_transformer_logits(x, THETA), N_V=7)
TRACE = fa.trace(fa.d_transformer, x, THETA)
PRE_ED = placement.init_pre_ln_ed_transformer(
    KEY, N_V=7, ell_max=8, L_enc=1, L_dec=1, H=2, d_e=4, d_mlp=8
)

LIBRARY = [
    Case("Trace.get layer= for l=", lambda: TRACE.get(10, 6, layer=1), TypeError,
         r"^Trace.get", r"'layer' is not one of the paper's loop indices"),
    Case("Trace.find layer= for l=", lambda: TRACE.find(10, 6, layer=1), TypeError,
         r"^Trace.find", r"'layer' is not one of the paper's loop indices"),
    Case("write_html of a string", lambda: write_html("trace", "t.html"), TypeError,
         r"^write_html", r"'trace' must be a Trace"),
    Case("run_battery progress=True", lambda: run_battery(MODEL, checks=["determinism"],
         progress=True), TypeError, r"^run_battery", r"'progress' must be a function"),
    Case("probe_lengths length 0", lambda: probe_lengths(MODEL, length=0), ValueError,
         r"^probe_lengths", r"'length' = 0 must be at least 2"),
    Case("check_vmap of an array", lambda: check_vmap(lambda v: v, jnp.zeros((2, 3))), TypeError,
         r"^check_vmap", r"'batched_args' must be a tuple"),
    Case("init_post_ln_d_transformer without sizes", lambda: placement.init_post_ln_d_transformer(
         KEY, N_V=7, ell_max=8), TypeError, r"^init_post_ln_d_transformer",
         r"'H' is missing: give H, d_e, d_mlp, L"),
    Case("init_pre_ln_e_transformer layers=", lambda: placement.init_pre_ln_e_transformer(
         KEY, N_V=7, ell_max=8, layers=1, H=2, d_e=4, d_mlp=8), TypeError,
         r"^init_pre_ln_e_transformer", r"'layers' is not a hyperparameter"),
    Case("Post-LN eps nan", lambda: placement.post_ln_d_transformer_logits(x, THETA, eps=np.nan),
         ValueError, r"^Post-LN DTransformer", r"'eps' must be a finite number >= 0, got nan"),
    Case("Pre-LN eps < 0", lambda: placement.pre_ln_d_transformer_logits(x, THETA, eps=-1e-5),
         ValueError, r"^Pre-LN DTransformer", r"'eps' must be a finite number >= 0"),
    Case("Post-LN activation 'gelu'", lambda: placement.post_ln_d_transformer_logits(
         x, THETA, activation="gelu"), TypeError, r"^Post-LN DTransformer", r"'activation'"),
    Case("Pre-LN Algorithm 8 eps < 0", lambda: placement.pre_ln_ed_transformer_logits(
         x, x, PRE_ED, eps=-1.0), ValueError, r"^Pre-LN EDTransformer", r"'eps'"),
    Case("shared_layers of a string", lambda: factorised.shared_layers("layer", 2), TypeError,
         r"^shared_layers", r"'layer' must be one layer's parameters"),
    Case("sentence_embedding of a model's name", lambda: bert.sentence_embedding(
         "hi", "all-MiniLM-L6-v2"), TypeError, r"^sentence_embedding", r"'model' must be"),
    Case("encode_smiles outside SMILES", lambda: albert.encode_smiles("C§C", {"[UNK]": 1}),
         ValueError, r"^encode_smiles", r"'smiles' = 'C§C'"),
    Case("fit on no data", lambda: fit(THETA, [], KEY, optimizer=optax.sgd(0.1), N_steps=2,
         batch_size=2, evaluate=lambda th: 0.0, eval_every=1), ValueError, r"^fit",
         r"'data' is empty"),
    Case("init_kv_cache of an encoder", lambda: cache.init_kv_cache(E_THETA), TypeError,
         r"^init_kv_cache", r"'theta' must be θ of Algorithm 10 or 8"),
    Case("d_cached_logits cache None", lambda: cache.d_cached_logits(x, 0, THETA, None),
         TypeError, r"^d_cached_logits", r"'cache' must be a KVCache"),
]  # fmt: skip


@pytest.mark.parametrize("case", LIBRARY, ids=lambda c: c.name)
def test_library(case):
    _expect(case, case.call)


def test_load_checkpoint_names_a_keyword_that_is_not_a_hyperparameter(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", THETA)
    case = Case("layers=", lambda: load_checkpoint(path, layers=1), TypeError,
                r"^load_checkpoint", r"'layers' is not a hyperparameter of its DTransformer")  # fmt: skip
    _expect(case, case.call)
    assert load_checkpoint(path, L=1).hyperparameters["L"] == 1  # a right one still answers


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def hf():
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = dict(vocab_size=20, hidden_size=8, intermediate_size=16, num_attention_heads=2)
    cL = tf.LlamaConfig(num_hidden_layers=2, num_key_value_heads=1, **small)
    cO = tf.OPTConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, ffn_dim=16,
                      num_attention_heads=2, word_embed_proj_dim=8, max_position_embeddings=16)  # fmt: skip
    cT = tf.T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    cB = tf.BartConfig(vocab_size=20, d_model=8, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                       decoder_ffn_dim=16, max_position_embeddings=16)  # fmt: skip
    out = {"llama": (_state(tf.LlamaForCausalLM(cL)), cL.to_dict())}
    for name, model, config in (("opt", tf.OPTForCausalLM, cO), ("t5", tf.T5ForConditionalGeneration,
                                cT), ("bart", tf.BartForConditionalGeneration, cB)):  # fmt: skip
        module = {"opt": opt, "t5": t5, "bart": bart}[name]
        kw = getattr(module, f"{name}_config")(config.to_dict())
        state = _state(model(config))
        out[name], out[name + " state"] = getattr(module, f"{name}_from_state_dict")(state, **kw), (state, kw)  # fmt: skip
    out["neox"] = tf.GPTNeoXConfig(hidden_size=8, num_attention_heads=2).to_dict()
    out["phi"] = tf.PhiConfig(hidden_size=8, num_attention_heads=2).to_dict()
    return out


def test_families(hf):
    state, config = hf["llama"]
    kw = llama_config(config)
    theta = llama_from_state_dict(state, **kw)
    other = llama.init_llama(KEY, N_V=20, L=1, H=2, G=1, d_e=8, d_mlp=16)
    neox = dict(hf["neox"], rope_parameters=dict(hf["neox"]["rope_parameters"], partial_rotary_factor=1.5))  # fmt: skip
    phis = dict(hf["phi"], rope_parameters=dict(hf["phi"]["rope_parameters"], partial_rotary_factor=1.5))  # fmt: skip
    z, none = jnp.asarray([3, 4, 5]), jnp.zeros(3, bool)
    cases = [
        Case("loader: a missing tensor", lambda: llama_from_state_dict(
             {k: v for k, v in state.items() if k != "model.norm.weight"}, **kw), ValueError,
             r"^llama_from_state_dict", r"argument 'state' has no tensor 'model.norm.weight'"),
        Case("loader: n_layers 3 for 2", lambda: llama_from_state_dict(
             state, **dict(kw, n_layers=3)), ValueError, r"^llama_from_state_dict",
             r"'n_layers' = 3, but 'state' holds 2 layers"),
        Case("cached logits: another θ's cache", lambda: llama.llama_cached_logits(
             x, 0, theta, llama.init_llama_cache(other, 8)), ValueError,
             r"^llama_cached_logits", r"'cache' has keys"),
        Case("cached logits: no cache", lambda: llama.llama_cached_logits(x, 0, theta, None),
             TypeError, r"^llama_cached_logits", r"'cache' must be the DecoderCache"),
        Case("qwen2 loader: no q/k/v biases", lambda: qwen2.qwen2_from_state_dict(
             state, **qwen2.qwen2_config(dict(config, model_type="qwen2"))), ValueError,
             r"^qwen2_from_state_dict", r"argument 'state' has no tensor '.*q_proj.bias'"),
        Case("qwen2_config of Llama's", lambda: qwen2.qwen2_config(config), ValueError,
             r"^qwen2_config", r"'config' is a 'llama' configuration"),
        Case("mistral_config window 'four'", lambda: mistral.mistral_config(dict(
             config, model_type="mistral", sliding_window="four")), ValueError, r"^mistral_config",
             r"'config' has sliding_window = 'four'"),
        Case("gemma_logits of a Llama θ", lambda: gemma.gemma_logits(x, theta), ValueError,
             r"^gemma_logits", r"'theta' carries another family's configuration"),
        Case("opt_logits beyond ell_max", lambda: opt.opt_logits(jnp.arange(20) % 9, hf["opt"]),
             ValueError, r"^opt_logits", r"'x' has length 20 > ell_max = 16"),
        Case("gpt_neox_config factor 1.5", lambda: gpt_neox.gpt_neox_config(neox), ValueError,
             r"^gpt_neox_config", r"partial_rotary_factor \(rotary_pct\) = 1.5"),
        Case("phi_config factor 1.5", lambda: phi.phi_config(phis), ValueError, r"^phi_config",
             r"partial_rotary_factor = 1.5"),
        Case("t5_generate max_new -1", lambda: t5.t5_generate(z, hf["t5"], max_new=-1),
             ValueError, r"^t5_generate", r"'max_new' = -1"),
        Case("t5_generate start 99", lambda: t5.t5_generate(z, hf["t5"], max_new=2, start=99),
             ValueError, r"^t5_generate", r"'start' = 99 is outside \[0, 20\)"),
        Case("t5_generate eos -5", lambda: t5.t5_generate(z, hf["t5"], max_new=2, eos=-5),
             ValueError, r"^t5_generate", r"'eos' = -5"),
        Case("t5 loader: d_kv 2 for 4", lambda: t5.t5_from_state_dict(hf["t5 state"][0],
             **dict(hf["t5 state"][1], d_kv=2)), ValueError, r"^t5_from_state_dict",
             r"'d_kv' = 2 with n_heads = 2: tensor '.*q.weight' has shape \(8, 8\), expected \(4, 8\)"),
        Case("t5_logits no real token", lambda: t5.t5_logits(z, x, hf["t5"], z_valid=none),
             ValueError, r"^t5_logits", r"'z_valid' marks no token of z as real"),
        Case("bart_logits no real token", lambda: bart.bart_logits(z, x, hf["bart"],
             z_valid=none), ValueError, r"^bart_logits", r"'z_valid' marks no token of z as real"),
    ]  # fmt: skip
    for case in cases:
        _expect(case, case.call)
    assert llama.llama_logits(x, theta).shape == (20, 3)


def _cli(argv, capsys):
    from formal_algorithms.cli.main import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err
    return err


def test_command_line(tmp_path, capsys):
    """Each refused before any model loads or any run starts, naming the option as typed."""
    err = _cli(["chat", "--prompt", "  "], capsys)
    assert "--prompt is empty" in err
    err = _cli(["finetune", "--unlabelled", "email", "--out", str(tmp_path / "ft")], capsys)
    assert "--unlabelled 'email' is also one of --classes" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    err = _cli(["train", "--resume", str(run / "model.safetensors")], capsys)
    assert "--resume" in err and "is a file; give the run's directory" in err
    err = _cli(["train", "--resume", str(run), "--force"], capsys)
    assert "--force does not apply with --resume" in err
    path = save_checkpoint(
        tmp_path / "c.safetensors", THETA, tokenizer=dict(type="char", chars="ab")
    )
    err = _cli(["trace", "--checkpoint", str(path), "--prompt", "ab", "--generate", "20"], capsys)
    assert "--prompt of 3 tokens with --generate 20 needs 22 positions" in err
    err = _cli(["benchmark", "--quick", "--png", str(tmp_path)], capsys)
    assert "--png" in err and "is a directory" in err
