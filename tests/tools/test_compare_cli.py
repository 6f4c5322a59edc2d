"""``formal-algorithms compare``: the report on the command line, ``--all``, ``--model-class``,
a healthy float64 Llama exiting 0, and bad input refused in one line before any model is loaded
(issues 27, 29)."""

import json
import re

import pytest
import torch
from test_compare import X, gpt2, llama

from formal_algorithms.cli import compare as cli_compare
from formal_algorithms.cli.compare import INJECTABLE, TABLES
from formal_algorithms.cli.main import main
from formal_algorithms.interop.compare import TABLES as FAMILY_TABLES
from formal_algorithms.interop.compare.families import CLASSES
from formal_algorithms.interop.departures import DEPARTURES

TOKENS = " ".join(map(str, X))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    gpt2(activation_function="gelu").save_pretrained(path)
    return path


@pytest.fixture
def no_load(monkeypatch):
    """A model load fails the test: the errors below must come before it."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli_compare, "_load", load)


def test_cli_tables_and_choices_match_the_library():
    assert INJECTABLE == tuple(DEPARTURES)  # the CLI's --inject choices
    assert TABLES == CLASSES and set(TABLES) == set(FAMILY_TABLES)


def test_cli_compare_equal_then_departing(gpt2_dir, capsys):
    assert main(["compare", "--hf", str(gpt2_dir), "--tokens", TOKENS]) == 0
    out = capsys.readouterr().out
    assert "EQUAL" in out and "Algorithm 10" in out
    status = main(["compare", "--hf", str(gpt2_dir), "--tokens", TOKENS, "--inject", "gelu-form"])
    out = capsys.readouterr().out
    assert status == 3
    assert re.search(r"DEPARTS at Algorithm 10 › line 8 \(l=1\)", out), out
    assert "first at token position t = 1" in out
    assert "applies the tanh GELU (gelu_new)" in out


def test_cli_all_lists_every_departing_row(gpt2_dir, capsys):
    argv = ["compare", "--hf", str(gpt2_dir), "--tokens", TOKENS, "--inject", "relu-layer"]
    assert main(argv + ["--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    departing = [r["path"] for r in data["rows"] if not r["ok"]]
    assert main(argv + ["--all"]) == 3
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if "<-- beyond tolerance" in line]
    assert [line.split("  ")[0].strip() for line in marked] == departing
    assert main(["compare", "--hf", str(gpt2_dir), "--tokens", TOKENS, "--all"]) == 0
    assert "(no row of" in capsys.readouterr().out


def test_cli_compare_json(gpt2_dir, capsys):
    status = main(["compare", "--hf", str(gpt2_dir), "--length", "9", "--seed", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 0 and data["departs"] is False and data["dtype"] == "float32"
    assert len(data["tokens"]) == 9 and data["first_departure"] is None


def test_cli_model_class_of_ones_own(gpt2_dir, tmp_path, capsys):
    """A modified class that save_pretrained does not carry: its last MLP applies ReLU."""
    source = tmp_path / "my_models.py"
    source.write_text(
        "from torch import nn\n"
        "from transformers import GPT2LMHeadModel\n\n"
        "class ReluGPT2(GPT2LMHeadModel):\n"
        "    def __init__(self, config):\n"
        "        super().__init__(config)\n"
        "        self.transformer.h[-1].mlp.act = nn.ReLU()\n"
    )
    status = main(["compare", "--hf", str(gpt2_dir), "--tokens", TOKENS, "--model-class",
                   f"{source}:ReluGPT2"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 3 and "ReluGPT2 against Algorithm 10" in out
    assert re.search(r"DEPARTS at Algorithm 10 › line 8 \(l=2\)", out)
    assert "applies ReLU" in out


def test_cli_healthy_float64_llama_exits_0(tmp_path, capsys):
    llama().save_pretrained(tmp_path)
    assert main(["compare", "--hf", str(tmp_path), "--tokens", TOKENS, "--float64"]) == 0
    out = capsys.readouterr().out
    assert "EQUAL" in out and out.count("known departure: ") == 3


def test_cli_injects_a_llama_departure_into_a_qwen2_directory(tmp_path, capsys):
    from test_compare_families import qwen2

    qwen2().save_pretrained(tmp_path)
    argv = ["compare", "--hf", str(tmp_path), "--tokens", TOKENS, "--inject", "eps"]
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert "DEPARTS at Algorithm 10 › line 7 (l=2)" in out, out


def test_cli_sends_a_bart_directory_to_the_python_api(tmp_path, capsys):
    from test_compare_families import bart

    bart().save_pretrained(tmp_path)
    assert main(["compare", "--hf", str(tmp_path), "--tokens", "2 0 5"]) != 0
    err = capsys.readouterr().err
    assert "holds a BART model" in err and "interop.compare(model, x, z=z)" in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tokens", "1 99"], r"--tokens holds token ids outside \[0, 40\)"),
        (["--tokens", "1 x"], r"--tokens '1 x' must be integers"),
        (["--tokens", " "], r"--tokens gives no tokens$"),
        (["--tokens", "1 2;"], r"--tokens gives no tokens in one of its ';'-separated sequences"),
        (["--tokens", "1 2; 3", "--cached"], r"--cached needs one sequence of at least 2 tokens"),
        (["--tokens", "1", "--cached"], r"--cached needs one sequence of at least 2 tokens"),
        (["--text", "hello"], r"--text needs the model's tokenizer, and --hf .* has none"),
        (["--inject", "pre-ln"], r"--inject pre-ln does not apply to this model \(gpt2\)"),
        (["--model-class", "nothing"], r"--model-class 'nothing' must be module:Class"),
        (["--model-class", "no_such_module_h27:Model"], r"cannot import 'no_such_module_h27'"),
        (["--model-class", "json:Nothing"], r"'json' has no model class 'Nothing'"),
    ],
)
def test_cli_bad_options_before_any_load(gpt2_dir, capsys, no_load, argv, message):
    assert main(["compare", "--hf", str(gpt2_dir), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("formal-algorithms: error: ") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err


@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("0", "0.0"), ("-1", "-1.0")])
def test_cli_tolerance_out_of_range_is_a_parser_error(gpt2_dir, capsys, no_load, value, shown):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--hf", str(gpt2_dir), "--tolerance", value])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err == (f"formal-algorithms: error: --tolerance must be a finite number > 0, got "
                   f"{shown} (see: formal-algorithms compare --help)")  # fmt: skip


def _directory(tmp_path, config, files=()):
    tmp_path.joinpath("config.json").write_text(json.dumps(config))
    for name, data in files:
        tmp_path.joinpath(name).write_bytes(data)
    return str(tmp_path)


@pytest.mark.parametrize(
    "config, files, message",
    [
        ({"model_type": "xlnet"}, (), r"holds a 'xlnet' model; compare has a table for bart, bert, gemma, gpt2, gpt_neox, llama"),
        ({"model_type": "gpt2", "vocab_size": 40, "n_positions": 16}, (),
         r"has no weights \(model\.safetensors or pytorch_model\.bin\)"),
        ({"model_type": "gpt2", "vocab_size": 40, "n_positions": 16},
         (("model.safetensors", b"\x07garbage, not a safetensors file"),),
         r"model\.safetensors is not a readable safetensors file"),
    ],
)  # fmt: skip
def test_cli_bad_directories_before_any_load(tmp_path, capsys, no_load, config, files, message):
    assert main(["compare", "--hf", _directory(tmp_path, config, files)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert "unexpected" not in err


def test_cli_missing_directory_and_damaged_weights(gpt2_dir, tmp_path, capsys):
    assert main(["compare", "--hf", str(tmp_path / "missing")]) == 1
    assert "formal-algorithms: error: --hf" in capsys.readouterr().err
    assert main(["compare", "--hf", str(gpt2_dir), "--length", "100"]) == 1  # not cut to 16
    assert (
        "--length gives 100 tokens, more than the model's 16 positions" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit, match="2"):  # the parser refuses it before --hf is looked at
        main(["compare", "--hf", str(tmp_path / "missing"), "--tolerance", "-1"])
    assert "--tolerance must be a finite number > 0" in capsys.readouterr().err
    # a header that parses, tensors that do not: refused by the loader, in one line
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    damaged = len(header).to_bytes(8, "little") + header + b"\x00" * 3
    config = json.loads((gpt2_dir / "config.json").read_text())
    directory = _directory(tmp_path, config, (("model.safetensors", damaged),))
    assert main(["compare", "--hf", directory]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GPT2LMHeadModel cannot load it" in err, err
    assert "unexpected" not in err and torch is not None


def test_cli_padded_batch_and_cached_step(gpt2_dir, capsys):
    batch = f"{TOKENS}; {' '.join(map(str, X[:4]))}"
    assert main(["compare", "--hf", str(gpt2_dir), "--tokens", batch, "--padding", "left"]) == 0
    out = capsys.readouterr().out
    assert out.count("EQUAL") == 2 and "(sequence 2 of 2, left padding)" in out
    assert main(["compare", "--hf", str(gpt2_dir), "--tokens", batch, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["tokens"] for d in data] == [X.tolist(), X[:4].tolist()]
    assert main(["compare", "--hf", str(gpt2_dir), "--tokens", TOKENS, "--cached"]) == 0
    assert f"token {len(X)} through its cache of {len(X) - 1}" in capsys.readouterr().out
