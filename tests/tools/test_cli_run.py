"""``formal-algorithms train`` as a run people manage (issue 19): periodic held-out evaluation with
a checkpoint each time and the best one kept, resuming equal to not stopping, no silent overwrite,
honest epochs, a prompt drawn from the corpus, the overfitting warning and early stop, and
``info``. In-process (``cli.main``) with a tiny model; one training run is shared."""

import contextlib
import hashlib
import io
import math
import re
import shutil

import jax
import numpy as np
import pytest

from formal_algorithms import cli
from formal_algorithms.cli import info as info_cmd
from formal_algorithms.cli import runs
from formal_algorithms.cli import train as train_cmd
from formal_algorithms.paper.tokenization import pydoc_topics_text
from formal_algorithms.practice.checkpoint import load_checkpoint
from formal_algorithms.practice.fit import no_improvement
from formal_algorithms.visualise import tick_step

TINY = ["--d-e", "16", "--layers", "1", "--heads", "2", "--batch-size", "4", "--ell-max", "16"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def main(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leaves_equal(a, b):
    return all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of 6 steps, evaluated every 3; the checkpoint written at step 3 is copied aside
    (as a run interrupted after it would have left it)."""
    root = tmp_path_factory.mktemp("run")
    corpus = root / "text.txt"
    corpus.write_text(pydoc_topics_text()[:3000], encoding="utf-8")
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
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main([str(a) for a in ("train", "--text", corpus, "--out", out, *TINY,
                                              "--steps", "6", "--eval-every", "3",
                                              "--sample-length", "12")])  # fmt: skip
    finally:
        mp.undo()
    assert code == 0
    return dict(root=root, corpus=corpus, out=out, at3=at3, stdout=stdout.getvalue())


def test_evaluations_checkpoints_and_the_best_one(run):
    out, stdout = run["out"], run["stdout"]
    last = load_checkpoint(out / "model.safetensors")
    assert last.extra["step"] == 6 and last.extra["status"] == "finished"
    assert last.extra["opt_state_saved"] and last.arrays["loss_history"].shape == (6,)
    evals = last.extra["evals"]
    assert [e["step"] for e in evals] == [3, 6]
    assert last.extra["held_out_loss"] == evals[-1]["held_out_loss"]
    best = load_checkpoint(out / "best.safetensors")
    assert best.extra["step"] == min(evals, key=lambda e: e["held_out_loss"])["step"]
    assert not best.extra["opt_state_saved"]
    assert re.search(r"eval +step 3: held-out loss [\d.]+, training loss [\d.]+", stdout)
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    # epochs as the trainer takes them: ceil(N / batch) steps an epoch
    n = int(re.search(r"data +(\d+) training sequences", stdout).group(1))
    per_epoch = math.ceil(n / 4)
    assert f"({6 / per_epoch:.1f} epochs of {per_epoch} steps)" in stdout


def test_resume_equals_the_uninterrupted_run(run, capsys):
    code, out, err = main(capsys, "train", "--resume", run["at3"], "--sample-length", "4")
    assert code == 0, err
    assert "resumed" in out and "at step 3 of 6" in out
    resumed = load_checkpoint(run["at3"] / "model.safetensors")
    full = load_checkpoint(run["out"] / "model.safetensors")
    assert leaves_equal(resumed.theta, full.theta)  # bit-exact
    np.testing.assert_array_equal(resumed.arrays["loss_history"], full.arrays["loss_history"])
    assert [e["step"] for e in resumed.extra["evals"]] == [3, 6]
    # a finished run has nothing left to do
    code, _, err = main(capsys, "train", "--resume", run["at3"])
    assert code == 1 and "finished all its 6 steps" in err and "Traceback" not in err


def test_no_silent_overwrite(run, capsys, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    shutil.copy(run["out"] / "model.safetensors", out / "model.safetensors")
    before = (out / "model.safetensors").read_bytes()
    args = ("train", "--text", run["corpus"], "--out", out, *TINY, "--steps", "6",
            "--eval-every", "3", "--sample-length", "2")  # fmt: skip
    code, stdout, err = main(capsys, *args)
    assert code == 0, err
    assert f"{out} holds a run; writing to {out}-2" in stdout
    assert (out / "model.safetensors").read_bytes() == before
    assert load_checkpoint(tmp_path / "r-2" / "model.safetensors").extra["step"] == 6
    written = (out / "model.safetensors").stat().st_mtime_ns
    code, stdout, err = main(capsys, *args, "--force")
    assert code == 0, err
    assert (out / "model.safetensors").stat().st_mtime_ns != written  # overwritten …
    assert (out / "model.safetensors").read_bytes() == before  # … by a reproduction: equal bytes


def test_sample_with_the_seed_repeats_what_train_printed(run, capsys):
    printed = run["stdout"].split("-" * 78 + "\n")[1]  # the sample between the rulers
    path = run["out"] / "model.safetensors"
    code, out, err = main(capsys, "sample", "--checkpoint", path, "--length", "12", "--seed", "0")
    assert code == 0, err
    assert out == printed
    code, out, err = main(capsys, "sample", "--checkpoint", path, "--length", "12",
                          "--num-samples", "2")  # fmt: skip
    assert code == 0, err
    first, second = out.split("--- sample 2 of 2 (seed 0, key 1)\n")
    assert first == "--- sample 1 of 2 (seed 0, key 0)\n" + printed and second != printed


def test_top_k_1_is_greedy_and_the_stop_string_ends_a_sample(run, capsys):
    path = run["out"] / "model.safetensors"
    _, greedy, _ = main(
        capsys, "sample", "--checkpoint", path, "--length", "20", "--temperature", "0"
    )
    for tau in ("0.7", "3"):
        _, top1, _ = main(capsys, "sample", "--checkpoint", path, "--length", "20", "--top-k", "1",
                          "--temperature", tau, "--seed", "5")  # fmt: skip
        assert top1 == greedy
    _, full, _ = main(capsys, "sample", "--checkpoint", path, "--length", "20")
    stop = full.rstrip("\n")[5:7]  # two characters that the sample contains
    _, cut, _ = main(capsys, "sample", "--checkpoint", path, "--length", "20", "--stop", stop)
    assert cut == full[: full.index(stop)] + "\n"
    for option, value, pattern in (("--top-k", "-1", "--top-k must be at least 0"),
                                   ("--top-p", "0", r"--top-p must be in \(0, 1\]")):  # fmt: skip
        with pytest.raises(SystemExit, match="2"):
            main(capsys, "sample", "--checkpoint", path, option, value)
        err = capsys.readouterr().err
        assert re.search(pattern, err) and "Traceback" not in err


def test_info_reports_what_the_checkpoint_holds(run, capsys):
    path = run["out"] / "model.safetensors"
    code, out, err = main(capsys, "info", path)
    assert code == 0, err
    checkpoint = load_checkpoint(path)
    n = sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(checkpoint.theta))
    assert f"parameters  {n:,}\n" in out
    assert hashlib.sha256(path.read_bytes()).hexdigest() in out
    assert "DTransformer (Algorithm 10)" in out and "char, N_V = " in out
    assert "step 6 of 6, finished; resumable" in out
    best = min(checkpoint.extra["evals"], key=lambda e: e["held_out_loss"])
    assert f"best {best['held_out_loss']:.4f} at step {best['step']}" in out
    hp = checkpoint.hyperparameters
    assert f"d_e = {hp['d_e']}" in out and f"ell_max = {hp['ell_max']}" in out


def test_info_on_metadata_written_by_hand(tmp_path, capsys):
    """``info`` on metadata that no command wrote: evaluations without a loss are left out, and a
    record of the wrong types is shown by its fields, exit 0, never an unexpected error."""
    from formal_algorithms.paper.parameters import init_d_transformer
    from formal_algorithms.practice.checkpoint import save_checkpoint

    theta = init_d_transformer(jax.random.key(0), N_V=5, ell_max=4, L=1, H=1, d_e=2, d_mlp=2)
    odd = save_checkpoint(tmp_path / "odd.safetensors", theta,
                          extra={"held_out_loss": 1.5, "evals": [{"step": 3}, "x"]})  # fmt: skip
    code, out, err = main(capsys, "info", odd)
    assert code == 0 and "held-out    loss 1.5000" in out and "evaluations" not in out, err
    wrong = save_checkpoint(tmp_path / "wrong.safetensors", theta,
                            extra={"held_out_loss": "low", "config": [1]})  # fmt: skip
    code, out, err = main(capsys, "info", wrong)
    assert code == 0 and "unexpected" not in out + err, err
    assert "metadata    not the record this library's commands write" in out
    assert "its fields: config, held_out_loss" in out


def test_the_overfitting_warning_and_early_stop():
    def evals(*pairs):
        return [dict(step=10 * (i + 1), train_loss=t, held_out_loss=h) for i, (t, h) in
                enumerate(pairs)]  # fmt: skip

    warning = runs.overfitting_warning(evals((3.0, 3.1), (2.5, 3.3)))
    assert "held-out loss rose 3.100 → 3.300" in warning and "fell 3.000 → 2.500" in warning
    assert runs.overfitting_warning(evals((3.0, 3.1), (2.5, 3.0))) is None  # both fell
    assert runs.overfitting_warning(evals((3.0, 3.1), (3.2, 3.3))) is None  # both rose
    assert runs.overfitting_warning(evals((3.0, 3.1))) is None
    history = evals((3, 3.0), (2, 2.5), (1, 2.6), (0.5, 2.7))
    assert not no_improvement(history[:3], 2)  # one evaluation without improvement
    assert no_improvement(history, 2)  # two
    assert not no_improvement(history, 3) and not no_improvement(history, None)


def test_epochs_prompt_suggestion_and_info_helpers():
    assert train_cmd.epoch_count(3, 1, 16) == "3 epochs of 1 steps"  # issue 19: not "48.0"
    assert train_cmd.epoch_count(10, 10, 4) == "3.3 epochs of 3 steps"
    assert train_cmd.epoch_count(3, 12, 4) == "1 epoch of 3 steps"
    text = "copyright (c) the authors\nlicence terms apply\nlicence text follows\n"
    assert train_cmd.suggest_prompt(text) == "licence "  # lower case: no 'The ' here
    assert train_cmd.suggest_prompt("12345") == "1"
    assert info_cmd.describe_tokenizer(None, 10).startswith("none stored; N_V = 10")


def test_attention_pictures_label_every_nth_position():
    """ℓ = 64 (the default context) gets 16 labels, every 4th position; short prompts all."""
    assert [tick_step(ell) for ell in (1, 16, 17, 32, 33, 64, 100, 256)] == [
        1,
        1,
        2,
        2,
        4,
        4,
        8,
        20,
    ]
    for ell in range(1, 600, 7):
        n = tick_step(ell)
        assert math.ceil(ell / n) <= 16 and (n == 1 or math.ceil(ell / (n - 1)) > 16 or n > 2)


def test_the_eta_leaves_out_the_compiling_step(monkeypatch):
    """Step 1 took 50 s (it compiled), step 2 one second: 8 steps left is an ETA of 8 s, not 400."""
    from types import SimpleNamespace

    clock = iter([50.0, 51.0, 54.0])
    monkeypatch.setattr(runs, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    bar, callback = runs.progress_callback(10, "train")
    stats = SimpleNamespace(n_targets=100)
    try:
        callback(1, 2.0, stats)
        assert "ETA after the first step" in bar.postfix
        callback(2, 2.0, stats)
        assert "ETA 8.0s" in bar.postfix and "100 tok/s" in bar.postfix
        callback.exclude(2.0)  # an evaluation between steps 2 and 3
        callback(3, 2.0, stats)
        assert "ETA 7.0s" in bar.postfix  # 2 steps in 2 s of training
    finally:
        bar.close()


def test_resume_from_another_directory_finds_the_runs_text(run, tmp_path, monkeypatch, capsys):
    """Issue 29: a run records its --text as the file it names (absolute), so --resume works
    from anywhere; a text that is gone is named as the run's, not as a --text never typed."""
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    shutil.copy(run["corpus"], started / "text.txt")
    monkeypatch.chdir(started)
    code, _, err = main(capsys, "train", "--text", "text.txt", "--out", "run", *TINY, "--steps",
                        "2", "--sample-length", "2")  # fmt: skip
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    resume = ("train", "--resume", started / "run", "--sample-length", "2")
    code, out, err = main(capsys, *resume, "--steps", "3", "--text", "../started/text.txt")
    assert code == 0 and "at step 2 of 3" in out, err  # the same file, named from here
    (started / "text.txt").unlink()
    code, _, err = main(capsys, *resume, "--steps", "4")
    assert code == 1
    assert f"the text this run was trained on, '{started / 'text.txt'}', is not there" in err
