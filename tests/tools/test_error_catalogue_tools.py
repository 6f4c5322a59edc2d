"""Issue 29's held-back catalogue (scratch/H29), the cases in the testing toolkit, the trace and the
checkpoints: each bad input raises the stated exception, and the message names the function (or
algorithm) and the argument, instead of a wrong verdict, an empty answer, a value stored as given
or Python's own error about something the caller never passed."""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint
from formal_algorithms.testing import (
    check_batch,
    check_causal_tokens,
    check_causality,
    check_column_stochastic,
    check_jit,
    check_layer_norm,
    from_callable,
    from_hf,
    from_paper,
    from_torch,
    run_battery,
)

KEY = jax.random.key(0)
THETA = fa.init_d_transformer(KEY, N_V=7, ell_max=8, L=1, H=2, d_e=4, d_mlp=8)
x = jnp.asarray([1, 2, 3])


def logits(x):
    return fa.d_transformer_logits(x, THETA)


MODEL = from_paper(logits, N_V=7)


class Case(NamedTuple):
    name: str
    call: object
    error: type
    who: str  # regex: the function or algorithm
    argument: str  # regex: the argument


@pytest.fixture(scope="module")
def tr():
    return fa.trace(fa.d_transformer, x, THETA)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint with an SGD-with-momentum state, and a folder to write into."""
    folder = tmp_path_factory.mktemp("ck")
    state = optax.sgd(0.1, momentum=0.9).init(THETA)
    return save_checkpoint(folder / "model.safetensors", THETA, opt_state=state), folder


TESTING = [
    Case("run_battery lengths=[0]", lambda: run_battery(MODEL, checks=["causality"], lengths=[0]),
         ValueError, r"^run_battery", r"'lengths' = 0 must be at least 2"),
    Case("run_battery lengths=[]", lambda: run_battery(MODEL, checks=["causality"], lengths=[]),
         ValueError, r"^run_battery", r"'lengths' is empty"),
    Case("run_battery length beyond max_length", lambda: run_battery(from_paper(logits, N_V=7,
         max_length=8), checks=["causality"], length=50), ValueError, r"^run_battery",
         r"'length' = 50 is more than the 8 positions of logits \(its max_length\)"),
    Case("run_battery lengths beyond max_length", lambda: run_battery(from_paper(logits, N_V=7,
         max_length=8), checks=["causality"], lengths=[4, 9]), ValueError, r"^run_battery",
         r"'lengths' = 9 is more than the 8 positions"),
    Case("run_battery lengths an int", lambda: run_battery(MODEL, checks=["causality"],
         lengths=5), TypeError, r"^run_battery", r"'lengths' must be a list of lengths"),
    Case("run_battery atol 0", lambda: run_battery(MODEL, checks=["causality"], atol=0.0),
         ValueError, r"^run_battery", r"'atol' must be a finite number > 0, got 0.0"),
    Case("from_callable bogus option", lambda: from_callable(lambda ids: ids, vocab_size=7,
         bogus_option=1), TypeError, r"^from_callable", r"'bogus_option' is not an option"),
    Case("check_causality length 0", lambda: check_causality(MODEL, length=0), ValueError,
         r"^check_causality", r"'length' = 0 must be at least 2"),
    Case("check_column_stochastic atol nan",
         lambda: check_column_stochastic(jnp.full((3, 2), 0.9), atol=float("nan")), ValueError,
         r"^check_column_stochastic", r"'atol' must be a finite number >= 0, got nan"),
    Case("check_jit atol -1", lambda: check_jit(logits, x, atol=-1.0), ValueError, r"^check_jit",
         r"'atol' must be a finite number >= 0, got -1.0"),
    Case("check_layer_norm atol string",
         lambda: check_layer_norm(lambda e: e, jnp.ones(4), atol="1e-6"), TypeError,
         r"^check_layer_norm", r"'atol' must be a real number >= 0"),
    Case("check_batch batch 0", lambda: check_batch(MODEL, batch=0), ValueError, r"^check_batch",
         r"'batch' = 0 must be at least 1"),
    Case("check_causal_tokens N_V 0", lambda: check_causal_tokens(logits, x, 0), ValueError,
         r"^check_causal_tokens", r"'N_V' = 0 must be at least 1"),
    Case("check_causal_tokens id beyond N_V", lambda: check_causal_tokens(logits, x, 3),
         ValueError, r"^check_causal_tokens", r"'x' holds token ids \[3\] outside \[0, N_V = 3\)"),
]  # fmt: skip


@pytest.mark.parametrize("case", TESTING, ids=[c.name for c in TESTING])
def test_testing_toolkit(case):
    _expect(case, case.call)


def test_from_torch_refuses_a_module_that_takes_no_token_ids():
    """An ``nn.Linear`` gave one ERROR per check with Python's ``unexpected keyword argument
    'input_ids'``; now the adapter refuses it by name."""
    import torch

    case = Case("from_torch nn.Linear", None, TypeError, r"^from_torch",
                r"'module' must take token ids as forward\(input_ids=…\).*Linear.forward")  # fmt: skip
    _expect(case, lambda: from_torch(torch.nn.Linear(3, 3), vocab_size=3))
    _expect(case._replace(who=r"^from_torch", argument=r"'bogus' is not an option"),
            lambda: from_torch(torch.nn.Embedding(3, 3), vocab_size=3, bogus=1))  # fmt: skip


def test_from_hf_checks_torch_dtype_before_loading(tmp_path):
    """A misspelt dtype was ignored for a loaded model; now it is refused before anything is
    loaded, and refused for a model already loaded (where it would be ignored)."""
    import torch

    case = Case("from_hf torch_dtype", None, ValueError, r"^from_hf",
                r"'torch_dtype' must be a torch.dtype, its name.*got 'float16x'")  # fmt: skip
    _expect(case, lambda: from_hf(tmp_path, torch_dtype="float16x"))  # an empty folder
    loaded = case._replace(argument=r"'torch_dtype' = 'float16' applies when loading a directory")
    _expect(loaded, lambda: from_hf(torch.nn.Linear(2, 2), torch_dtype="float16"))
    missing = case._replace(error=FileNotFoundError, argument=r"'model' = .* no.*config.json")
    _expect(missing, lambda: from_hf(tmp_path, torch_dtype="bfloat16"))  # a good dtype passes


TRACE = [
    Case("find h=0", lambda tr: tr.find(4, h=0), ValueError, r"^Trace.find", r"'h' = 0 .*1-based"),
    Case("table algorithm=99", lambda tr: tr.table(algorithm=99), ValueError, r"^Trace.table",
         r"'algorithm' = 99 must be 1-15"),
    Case("get line=None", lambda tr: tr.get(10, None), TypeError, r"^Trace.get",
         r"'line' must be an integer .*got None"),
    Case("get an unknown name=", lambda tr: tr.get(4, 6, name="Zed"), KeyError, r"^Trace.get",
         r"'name' = 'Zed': Algorithm 4 line 6 has no value of that name \(names recorded there: A"),
    Case("to_html into a directory", lambda tr, folder: tr.to_html(folder), IsADirectoryError,
         r"^Trace.to_html", r"'path' = .* is a directory"),
    Case("to_html to an int", lambda tr: tr.to_html(123), TypeError, r"^Trace.to_html",
         r"'path' must be a file name \(str or pathlib.Path\), got int 123"),
]  # fmt: skip


@pytest.mark.parametrize("case", TRACE, ids=[c.name for c in TRACE])
def test_trace(case, tr, tmp_path):
    if case.call.__code__.co_argcount == 2:
        _expect(case, lambda: case.call(tr, tmp_path))
    else:
        _expect(case, lambda: case.call(tr))


def test_trace_lookups_of_good_addresses_still_answer(tr):
    assert len(tr.find(4, h=1)) > 0 and len(tr.find(line=6)) > 0
    assert "Algorithm 4" in tr.table(algorithm=4)
    np.testing.assert_allclose(tr.get(4, 6, name="A", l=1, h=1).sum(axis=0), 1.0, rtol=1e-6)


CHECKPOINT = [
    Case("tokenizer 'abc'", lambda folder, path: save_checkpoint(folder / "t.safetensors", THETA,
         tokenizer="abc"), TypeError, r"^save_checkpoint", r"'tokenizer' must be a dict or None"),
    Case("arrays {'x': 'notarray'}", lambda folder, path: save_checkpoint(
         folder / "a.safetensors", THETA, arrays={"x": "notarray"}), TypeError,
         r"^save_checkpoint", r"'arrays': 'x' has dtype <U8"),
    Case("arrays a list", lambda folder, path: save_checkpoint(folder / "l.safetensors", THETA,
         arrays=[np.ones(2)]), TypeError, r"^save_checkpoint", r"'arrays' must be a dict"),
    Case("path 5", lambda folder, path: save_checkpoint(5, THETA), TypeError, r"^save_checkpoint",
         r"'path' must be a file name \(str or pathlib.Path\), got int 5"),
    Case("opt_state_template of another optimizer", lambda folder, path: load_checkpoint(
         path, opt_state_template=(jnp.zeros(3),)), ValueError, r"^load_checkpoint",
         r"'opt_state_template' does not fit the optimizer state in '.*model.safetensors'.*opt_state\[0\]"),
]  # fmt: skip


@pytest.mark.parametrize("case", CHECKPOINT, ids=[c.name for c in CHECKPOINT])
def test_checkpoint(case, saved):
    path, folder = saved
    _expect(case, lambda: case.call(folder, path))
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]  # nothing written


def _expect(case, call):
    with pytest.raises(case.error) as caught:
        call()
    message = str(caught.value)
    assert re.search(case.who, message), message
    assert re.search(case.argument, message), message


# ------------------------------------------------- the second held-back catalogue (scratch/H29new)
# Its command-line, family and compare cases (the library's other cases are in
# test_error_catalogue_second.py): each was silent or named an inner function before.


def _families():
    import transformers as tf

    from formal_algorithms.families import gpt_neox as nx
    from formal_algorithms.families import opt

    def state(model):
        return {k: v.detach().numpy() for k, v in model.state_dict().items()}

    cN = tf.GPTNeoXConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, rotary_pct=0.5, max_position_embeddings=16)  # fmt: skip
    cO = tf.OPTConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, ffn_dim=16,
                      num_attention_heads=2, word_embed_proj_dim=8, max_position_embeddings=16)  # fmt: skip
    sdN, kwN = state(tf.GPTNeoXForCausalLM(cN)), nx.gpt_neox_config(cN.to_dict())
    sdO, kwO = state(tf.OPTForCausalLM(cO)), opt.opt_config(cO.to_dict())
    return nx, opt, sdN, kwN, sdO, kwO


def test_gpt_neox_loader_refuses_heads_that_do_not_split_its_rows():
    nx, _, sdN, kwN, _, _ = _families()
    with pytest.raises(ValueError, match=r"^gpt_neox_from_state_dict: argument 'n_heads' = 3 .*"
                       r"query_key_value"):  # fmt: skip
        nx.gpt_neox_from_state_dict(sdN, **dict(kwN, n_heads=3))


def test_gpt_neox_logits_names_a_d_rot_beyond_the_head():
    nx, _, sdN, kwN, _, _ = _families()
    theta = nx.gpt_neox_from_state_dict(sdN, **kwN)
    bad = theta._replace(config=nx.GPTNeoXConfig(d_rot=8))
    with pytest.raises(ValueError, match=r"^gpt_neox_logits .*'d_rot' = 8 exceeds the 4 rows"):
        nx.gpt_neox_logits(np.array([1, 2]), bad)
    assert nx.gpt_neox_logits(np.array([1, 2]), theta).shape == (11, 2)  # d_rot 2 of 4: runs


def test_opt_loader_refuses_a_positions_table_of_another_width():
    _, opt, _, _, sdO, kwO = _families()
    state = dict(sdO, **{"model.decoder.embed_positions.weight": np.ones((18, 6), np.float32)})
    with pytest.raises(ValueError, match=r"^opt_from_state_dict: .*'model.decoder.embed_positions"
                       r".weight' has shape \(18, 6\), expected \(18, 8\)"):  # fmt: skip
        opt.opt_from_state_dict(state, **kwO)


def test_post_ln_stack_refuses_one_layer_where_the_sequence_belongs():
    from formal_algorithms.variants.placement import post_ln_stack, pre_ln_stack

    theta = fa.init_e_transformer(KEY, N_V=7, ell_max=8, L=1, H=2, d_e=4, d_mlp=8)
    X = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"^post_ln_stack: argument 'layers' .* got one layer"):
        post_ln_stack(X, theta.layers[0], None, fa.gelu, 1e-5)
    with pytest.raises(ValueError, match=r"^pre_ln_stack: argument 'layers' .* got one layer"):
        pre_ln_stack(X, theta.layers[0], None, fa.gelu, jnp.ones(4), jnp.zeros(4))
    assert post_ln_stack(X, theta.layers, None, fa.gelu, 1e-5).shape == (4, 3)


def test_compare_names_tokens_the_model_cannot_read():
    from test_compare import gpt2

    from formal_algorithms.interop.compare import compare, compare_batch

    with pytest.raises(ValueError, match=r"^compare: argument 'x' holds token ids \[60\]"):
        compare(gpt2(), [1, 2, 60])
    with pytest.raises(ValueError, match=r"^compare: argument 'x' has length 40 > ell_max = 16"):
        compare(gpt2(), list(range(40)))
    with pytest.raises(ValueError, match=r"^compare_batch: argument 'sequences\[1\]' holds"):
        compare_batch(gpt2(), [[1, 2], [1, 99]])


def test_cli_refuses_options_that_would_be_ignored(tmp_path, capsys):
    """``compare --padding`` with one sequence, ``train --vocab-size`` with the character
    tokenizer: refused before any work, naming the option (they were ignored without a word)."""
    from formal_algorithms.cli.main import main

    code = main(["compare", "--hf", str(tmp_path), "--tokens", "1 2 3", "--padding", "left"])
    err = capsys.readouterr().err
    assert code != 0 and "--padding" in err and "directory" not in err  # before --hf is read
    text = tmp_path / "t.txt"
    text.write_text("abc " * 50)
    argv = ["train", "--text", str(text), "--vocab-size", "100", "--out", str(tmp_path / "o")]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "--vocab-size applies to --tokenizer bpe" in err and "Traceback" not in err
