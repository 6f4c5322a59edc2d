"""``mlm`` and ``seq2seq`` are runs as ``train`` is (issue 26): one loop (``practice.fit``) gives
them a held-out evaluation every ``--eval-every`` steps with a checkpoint each time, the best one
kept, ``--early-stop`` and ``--resume`` equal to not stopping; and every numeric option of every
command is checked by its parser type."""

import argparse
import contextlib
import io
import shutil

import jax
import numpy as np
import pytest

from formal_algorithms import cli
from formal_algorithms.cli import options, runs
from formal_algorithms.cli.main import build_parser
from formal_algorithms.paper.tokenization import pydoc_topics_text
from formal_algorithms.practice.checkpoint import load_checkpoint

TINY = ["--d-e", "8", "--layers", "1", "--heads", "2", "--batch-size", "4"]
COMMANDS = {
    "mlm": ["--ell-max", "12", "--test-size", "6"],
    "seq2seq": ["--max-len", "3", "--train-size", "16", "--test-size", "4", "--examples", "1"],
}


def quiet_main(*args):
    with (
        contextlib.redirect_stdout(io.StringIO()) as out,
        contextlib.redirect_stderr(io.StringIO()),
    ):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue()


def leaves_equal(a, b):
    return all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def run(request, tmp_path_factory):
    """A run of 6 steps evaluated every 3; its checkpoint at step 3 copied aside."""
    command, root = request.param, tmp_path_factory.mktemp(request.param)
    text = root / "text.txt"
    text.write_text(pydoc_topics_text()[:2000], encoding="utf-8")
    extra = ["--text", text] if command == "mlm" else []
    out, at3 = root / "run", root / "at3"
    real_save = runs.Run.save

    def save_and_copy(self, path, *a, step, **kw):
        written = real_save(self, path, *a, step=step, **kw)
        if step == 3 and path.name == "model.safetensors":
            at3.mkdir()
            shutil.copy(path, at3 / path.name)
        return written

    mp = pytest.MonkeyPatch()
    mp.setattr(runs.Run, "save", save_and_copy)
    try:
        code, stdout = quiet_main(command, "--out", out, *TINY, *COMMANDS[command], *extra,
                                  "--steps", "6", "--eval-every", "3")  # fmt: skip
    finally:
        mp.undo()
    assert code == 0, stdout
    return dict(command=command, out=out, at3=at3, stdout=stdout)


def test_evaluations_write_the_run_and_the_best_checkpoint(run):
    last = load_checkpoint(run["out"] / "model.safetensors")
    assert last.extra["step"] == 6 and last.extra["status"] == "finished"
    assert last.extra["opt_state_saved"] and last.arrays["loss_history"].shape == (6,)
    evals = last.extra["evals"]
    assert [e["step"] for e in evals] == [3, 6] and last.extra["held_out_loss"] == evals[-1][
        "held_out_loss"]  # fmt: skip
    best = load_checkpoint(run["out"] / "best.safetensors")
    assert best.extra["step"] == min(evals, key=lambda e: e["held_out_loss"])["step"]
    assert not best.extra["opt_state_saved"]
    assert "eval        step 3: held-out loss" in run["stdout"]
    # what the command measures after training is in its final checkpoint
    assert last.extra["accuracy" if run["command"] == "seq2seq" else "baseline"] is not None


def test_resume_equals_the_uninterrupted_run(run):
    code, stdout = quiet_main(run["command"], "--resume", run["at3"])
    assert code == 0, stdout
    assert "at step 3 of 6" in stdout
    resumed = load_checkpoint(run["at3"] / "model.safetensors")
    full = load_checkpoint(run["out"] / "model.safetensors")
    assert leaves_equal(resumed.theta, full.theta)  # bit-exact
    np.testing.assert_array_equal(resumed.arrays["loss_history"], full.arrays["loss_history"])
    assert [e["step"] for e in resumed.extra["evals"]] == [3, 6]
    assert resumed.extra["config"] == full.extra["config"]
    code, _ = quiet_main(run["command"], "--resume", run["at3"])
    assert code == 1  # finished: nothing left to do


def test_resume_refuses_another_commands_run(run, capsys):
    other = "seq2seq" if run["command"] == "mlm" else "mlm"
    assert cli.main([other, "--resume", str(run["out"])]) == 1
    assert f"is not a run written by 'formal-algorithms {other}'" in capsys.readouterr().err


def test_every_numeric_option_is_checked_by_its_parser_type():
    """No bare int or float: a value out of range never reaches a command."""
    parser, bare = build_parser(), []
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.type in (int, float):
                bare.append(f"{name} {action.option_strings[0]}")
    assert not bare, bare
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 2, got 1"):
        options.integer(2)("1")
    with pytest.raises(ValueError):  # argparse's "invalid int value"
        options.integer(0)("1.5")
    for text in ("nan", "inf", "0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="a finite number > 0"):
            options.positive(text)
    assert options.temperature("inf") == float("inf") and options.non_negative("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"\(0, 1\)"):
        options.probability("1")


def test_resume_refuses_settings_that_contradict_the_run(run, capsys):
    """``--resume RUN --d-e 12`` does not silently continue with the run's own d_e (issue 29);
    a size that is the run's own, and the options that may change, are accepted."""
    assert cli.main([run["command"], "--resume", str(run["out"]), "--d-e", "12"]) == 1
    err = capsys.readouterr().err
    assert "--d-e 12: --resume continues the run in" in err and "(d_e = 8)" in err
    assert cli.main([run["command"], "--resume", str(run["out"]), "--heads", "3"]) == 1
    assert "(heads = 2)" in capsys.readouterr().err  # not "--heads 3 does not divide --d-e 64"
    # the run's own d_e is no contradiction: refused only because the run has finished
    assert cli.main([run["command"], "--resume", str(run["out"]), "--d-e", "8"]) == 1
    assert "finished all its 6 steps" in capsys.readouterr().err
