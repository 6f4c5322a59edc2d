"""A training run as ``train``, ``mlm`` and ``seq2seq`` manage it: its directory, its two
checkpoints (the last, resumable, and the best), resuming with the run's own settings, a progress
bar, a line per evaluation, the overfitting warning, and the last good state saved when it diverges
or is interrupted. The loop itself is :func:`..practice.fit.fit`.

A run of several processes (``train --processes N``, or the ``FA_*`` variables a cluster's
scheduler sets): :func:`launch_processes` starts the same command as N processes
(:func:`..practice.distributed.launch`); each joins the others (:func:`join`) and runs the same
code, fit's segments data-parallel over every process's devices and handed back gathered, so that
every process evaluates the same θ; only process 0 writes the run (``Run.writer``) and prints
what the user sees."""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import signal
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..practice.checkpoint import save_checkpoint
from .common import CHECKPOINT_NAME, PROG, duration, read_checkpoint, say
from .errors import stop_run
from .options import check_split, option

BEST_NAME = "best.safetensors"


@dataclasses.dataclass
class Run:
    """One command's run: its name, where it writes, and the facts every checkpoint of it carries
    (``facts``: family, activation, config, corpus, ...; ``tokenizer``: its dict, or ``None``);
    ``writer``: whether this process writes its files (in a run of several, process 0 only)."""

    command: str
    out: pathlib.Path
    facts: dict
    tokenizer: dict | None = None
    writer: bool = True

    def save(self, path, theta, opt_state, *, step, history, evals, status):
        """A checkpoint of the run, for the periodic evaluations, the best one, the end and an
        interruption alike: θ, the optimizer state (``None``: not resumable, as the best
        checkpoint), the step reached, the per-step losses and every evaluation so far. Nothing
        (``None``) in a process that is not the run's writer."""
        if not self.writer:
            return None
        extra = {
            **self.facts, "step": step, "status": status, "evals": list(evals),
            "held_out_loss": evals[-1]["held_out_loss"] if evals else None,
            "opt_state_saved": opt_state is not None,
        }  # fmt: skip
        return save_checkpoint(
            path,
            theta,
            tokenizer=self.tokenizer,
            opt_state=opt_state,
            extra=extra,
            arrays={"loss_history": np.asarray(history, np.float32)},
        )

    def finish(self, fitted, **results):
        """Rewrite the run's checkpoint at its end, adding ``results`` measured after training."""
        self.facts.update(results)
        status = "stopped early" if fitted.stopped else "finished"
        return self.save(
            self.out / CHECKPOINT_NAME,
            fitted.theta,
            fitted.opt_state,
            step=fitted.step,
            history=fitted.history,
            evals=fitted.evals,
            status=status,
        )


# ---------------------------------------------------------------- the run's directory and resume


def prepare_out_dir(out: pathlib.Path, *, force: bool) -> pathlib.Path:
    """``out``, unless it holds a run (a checkpoint) and ``force`` is off: then the first free
    ``out-2``, ``out-3``, …, announced. With ``force`` an old run's files are replaced."""
    if not (out / CHECKPOINT_NAME).exists():
        return out
    if force:
        (out / BEST_NAME).unlink(missing_ok=True)
        say(f"note        --force: replacing the run in {out}")
        return out
    n = 2
    while (out.with_name(f"{out.name}-{n}") / CHECKPOINT_NAME).exists():
        n += 1
    new = out.with_name(f"{out.name}-{n}")
    say(
        f"note        {out} holds a run; writing to {new} (--force replaces it, --resume {out} "
        "continues it)"
    )
    return new


def load_run(args, architecture: str, config_keys):
    """``--resume DIR``: the run's checkpoint and directory. Its configuration replaces the
    options in ``config_keys`` (``--steps N`` beyond the run's own extends it; ``--eval-every``
    and ``--early-stop`` keep the run's unless given now)."""
    out = pathlib.Path(args.resume)
    path = out / CHECKPOINT_NAME
    if out.is_file():
        raise ValueError(
            f"--resume {args.resume!r} is a file; give the run's directory (--resume {out.parent})"
        )
    if getattr(args, "force", False):
        raise ValueError(
            "--force does not apply with --resume: a resumed run writes to its own DIR"
        )
    if not path.exists():
        raise FileNotFoundError(f"--resume {args.resume!r}: there is no {CHECKPOINT_NAME} in it")
    checkpoint = read_checkpoint(path, f"--resume {args.resume!r} ({CHECKPOINT_NAME})")
    config = checkpoint.extra.get("config")
    if checkpoint.architecture != architecture or not config or "step" not in checkpoint.extra:
        raise ValueError(
            f"--resume {args.resume!r}: {path} is not a run written by '{PROG} {args.command}'"
        )
    if not checkpoint.extra.get("opt_state_saved"):
        raise ValueError(f"--resume {args.resume!r}: {path} has no optimizer state to resume")
    steps = args.steps
    for k in config_keys:
        given = option(k) in getattr(args, "given", ())
        if given and k != "steps" and not _same_setting(k, getattr(args, k), config[k]):
            raise ValueError(
                f"{option(k)} {getattr(args, k)}: --resume continues the run in {out} with its own "
                f"settings ({k} = {config[k]}); only --steps, --eval-every and --early-stop change"
            )
        setattr(args, k, config[k])
    for k in ("eval_every", "early_stop"):
        if getattr(args, k) is None:
            setattr(args, k, config.get(k))
    done = int(checkpoint.extra["step"])
    if steps is not None and steps != config["steps"]:
        if steps <= done:
            raise ValueError(f"--steps {steps}: the run in {out} is at step {done} already")
        say(
            f"note        --steps {steps}: the learning-rate schedule is stretched from "
            f"{config['steps']} to {steps} steps"
        )
        args.steps = steps
    elif done >= config["steps"]:
        raise ValueError(
            f"--resume {args.resume!r}: the run finished all its {done} steps; give --steps N "
            f"(N > {done}) to train it longer"
        )
    return checkpoint, out


def start(args, architecture: str, config_keys):
    """The run's directory and, with ``--resume``, the checkpoint it continues (else ``None``)."""
    if args.resume:
        return load_run(args, architecture, config_keys)
    if args.steps is None:
        args.steps = args.default_steps
    return None, prepare_out_dir(pathlib.Path(args.out), force=args.force)


def run_text(args, resumed):
    """``(text, source, SHA-256)`` of ``--text`` (or the default corpus); a resumed run must learn
    from the text it started on (its SHA-256 is in the checkpoint)."""
    import hashlib

    from .corpus import read_text

    if resumed is not None and args.text is not None and not pathlib.Path(args.text).exists():
        raise FileNotFoundError(
            f"--resume {args.resume!r}: the text this run was trained on, {args.text!r}, is "
            "not there any more"
        )
    text, source = read_text(args.text)
    text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if resumed is not None and resumed.extra.get("text_sha256") not in (None, text_sha256):
        raise ValueError(
            f"--resume {args.resume!r}: the corpus {source} is not the text this run was "
            "trained on (its SHA-256 differs)"
        )
    return text, source, text_sha256


def run_config(args, config_keys) -> dict:
    """The settings a run records (and ``--resume`` restores), with its evaluation interval and
    early stopping."""
    config = {k: getattr(args, k) for k in config_keys}
    if config.get("text") is not None:  # absolute: --resume may run from another directory
        config["text"] = str(pathlib.Path(config["text"]).resolve())
    config.update(eval_every=eval_interval(args), early_stop=args.early_stop)
    return config


def _same_setting(key, given, recorded) -> bool:
    """Whether an option typed with ``--resume`` agrees with the run's own (a text file by the
    file it names, wherever the command runs from)."""
    if key == "text" and given is not None and recorded is not None:
        return pathlib.Path(given).resolve() == pathlib.Path(recorded).resolve()
    return given == recorded


def eval_interval(args) -> int:
    """``--eval-every``, or a tenth of the run, but not more often than every 50 steps (each
    evaluation reads all the held-out data) nor less often than every 250; a run of up to 50
    steps is evaluated at its end."""
    return args.eval_every or min(args.steps, max(50, min(250, args.steps // 10)))


@functools.lru_cache(maxsize=8)
def make_optimizer(lr, steps, warmup, weight_decay):
    """The trainer's AdamW with warmup + cosine decay and clipping at 1.0; one object per setting
    in a process, so that a run resumed in the same process reuses the compiled step."""
    from ..practice.trainer import make_optimizer

    return make_optimizer(
        lr, N_steps=steps, warmup_steps=warmup, weight_decay=weight_decay, clip_norm=1.0
    )


def optimizer_of(args):
    return make_optimizer(args.lr, args.steps, min(args.warmup, args.steps // 2), args.weight_decay)


# ------------------------------------------------------------------------------- the training


def train_run(run: Run, theta, data, evaluate, key, args, *, resumed=None, member=None, **train_kw):
    """Fit θ (``practice.fit``) for ``args.steps`` steps, evaluating with ``evaluate(θ)`` every
    :func:`eval_interval` steps: after each evaluation the run's checkpoint is written (and the
    best one), a line is printed, overfitting is warned of, and ``--early-stop`` is applied.
    ``resumed``: the run's checkpoint to continue from; ``member``: this process's place in a run
    of several (:func:`join`), whose trainer then fits the segments. A run that diverges or is
    interrupted saves its last good state in the run's checkpoint and ends with a line saying so."""
    import jax

    from ..practice.fit import fit
    from ..practice.trainer import NonFiniteError, TrainingInterrupted

    if member is not None:
        devices = member.mesh.size
        check_split(
            args.batch_size,
            devices,
            f"{member.processes} processes × {devices // member.processes}",
        )
        say(member_line(member, theta, args))
        train_kw = dict(train_kw, train=member.train)
    optimizer = optimizer_of(args)
    theta, state = (theta, {}) if resumed is None else resume_state(run, theta, optimizer, args)
    bar, callback = progress_callback(args.steps, run.command, initial=state.get("start_step", 0))
    report = reporter(run, bar, callback, args.early_stop)
    loop = dict(optimizer=optimizer, N_steps=args.steps, batch_size=args.batch_size, fast=True)
    loop.update(eval_every=eval_interval(args), patience=args.early_stop, callback=callback)
    try:
        return fit(
            theta,
            data,
            key,
            evaluate=report.timed(evaluate),
            on_evaluation=report,
            **loop,
            **state,
            **train_kw,
        )
    except jax.errors.JaxRuntimeError as error:
        if member is None:
            raise
        # a collective whose other processes are gone: said as it is (not "unexpected")
        raise ConnectionError(" ".join(str(error).split())) from None
    except (NonFiniteError, TrainingInterrupted) as error:
        evals = report.evals or state.get("evals", [])
        resume = f"continue with: {PROG} {run.command} --resume {run.out}"
        raise stop_run(error, last_good_saver(run, error, evals), resume) from None
    finally:
        bar.close()


def resume_state(run: Run, theta, optimizer, args):
    """θ and what ``fit`` resumes from (optimizer state, step, evaluations, losses), read from
    the run's checkpoint with the optimizer state's structure taken from ``optimizer``."""
    resumed = read_checkpoint(
        run.out / CHECKPOINT_NAME,
        f"--resume {args.resume!r} ({CHECKPOINT_NAME})",
        opt_state_template=optimizer.init(theta),
    )
    step = int(resumed.extra["step"])
    say(f"resumed     {run.out / CHECKPOINT_NAME} at step {step} of {args.steps}")
    return resumed.theta, dict(
        opt_state=resumed.opt_state,
        start_step=step,
        evals=resumed.extra["evals"],
        history=resumed.arrays["loss_history"],
    )


def last_good_saver(run: Run, error, evals):
    """``save(θ, opt_state, completed, history)`` for :func:`.errors.stop_run`: the run's
    checkpoint at the last good state, with the evaluations made up to it."""
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "diverged"
    evals = [e for e in evals if e["step"] <= error.completed]

    def save(theta, opt_state, completed, history):
        return run.save(
            run.out / CHECKPOINT_NAME,
            theta,
            opt_state,
            step=completed,
            history=history,
            evals=evals,
            status=status,
        )

    return save


def reporter(run: Run, bar, callback, patience):
    """``report(evaluated)``, the ``on_evaluation`` of a run: write the run's checkpoint and the
    best one, print the evaluation's line, the overfitting warning (in full once, then in one
    line) and early stop, and leave the evaluation's time out of the progress bar's rate and ETA
    (``report.timed(evaluate)`` is the evaluation to give ``fit``)."""
    seen = {"warned": False, "start": 0.0}

    def write(text):
        bar.write(text, file=sys.stdout)

    def timed(evaluate):
        def evaluate_timed(theta):
            seen["start"] = time.perf_counter()
            return evaluate(theta)

        return evaluate_timed

    def report(e):
        report.evals[:] = e.evals
        kw = dict(step=e.step, history=e.history, evals=e.evals, status=e.status)
        run.save(run.out / CHECKPOINT_NAME, e.theta, e.opt_state, **kw)
        if e.best:
            run.save(run.out / BEST_NAME, e.theta, None, **kw)
        last = e.evals[-1]
        write(
            f"eval        step {e.step}: held-out loss {last['held_out_loss']:.3f}, training "
            f"loss {last['train_loss']:.3f}" + (" (best)" if e.best else "")
        )
        warning = overfitting_warning(e.evals)
        if warning and seen["warned"]:
            write(
                f"warning     held-out loss rose again, to {last['held_out_loss']:.3f} "
                f"(training loss {last['train_loss']:.3f})"
            )
        elif warning:
            seen["warned"] = True
            hint = (
                "" if patience else "; --early-stop N stops after N evaluations without improvement"
            )
            write(
                f"warning     {warning}; the best checkpoint is kept in {run.out / BEST_NAME}{hint}"
            )
        if e.status == "stopped early":
            write(
                f"early stop  no improvement in the last {patience} evaluations "
                f"(--early-stop {patience})"
            )
        callback.exclude(time.perf_counter() - seen["start"])

    report.evals, report.timed = [], timed
    return report


def overfitting_warning(evals) -> str | None:
    """The warning for the last of ``evals`` (dicts with ``step``, ``train_loss`` the mean
    training loss since the evaluation before, ``held_out_loss``), or ``None``: held-out loss
    rising while training loss falls is the mark of a model memorising its training data."""
    if len(evals) < 2:
        return None
    a, b = evals[-2], evals[-1]
    if b["held_out_loss"] > a["held_out_loss"] and b["train_loss"] < a["train_loss"]:
        return (
            f"held-out loss rose {a['held_out_loss']:.3f} → {b['held_out_loss']:.3f} while the "
            f"training loss fell {a['train_loss']:.3f} → {b['train_loss']:.3f} (steps "
            f"{a['step']} → {b['step']}): the model is memorising its training data (overfitting)"
        )
    return None


def best_line(run: Run, evals) -> str | None:
    """The line naming the best evaluation, when it is not the last."""
    best = min(evals, key=lambda e: e["held_out_loss"])
    if best["step"] == evals[-1]["step"]:
        return None
    return (
        f"best        step {best['step']}: held-out loss {best['held_out_loss']:.3f}, kept in "
        f"{run.out / BEST_NAME}"
    )


def progress_callback(total: int, desc: str, initial: int = 0):
    """A tqdm bar for trainer.train's ``callback(step, loss, stats)``: loss, tokens/s, ETA.

    Tokens/s and the ETA leave out the first step (which compiles): the ETA is the remaining
    steps times the mean time per step since then (evaluations left out), so it is not absurd
    at the first step; ``callback.exclude(seconds)`` leaves out time spent between steps (an
    evaluation). ``initial``: steps already done (a resumed run). The bar goes to stderr,
    so stdout holds only results.
    """
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
    )
    state = {"t0": None, "tokens": 0.0, "steps": 0, "excluded": 0.0}

    def callback(step, loss, stats):
        loss = float(loss)  # waits for the step: the rate is honest
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"] = now  # after the first (compiling) step
        else:
            state["tokens"] += float(stats.n_targets)
            state["steps"] += 1
        elapsed = now - state["t0"] - state["excluded"]
        rate = state["tokens"] / elapsed if elapsed > 0 else 0.0
        eta = (
            f"ETA {duration((total - step) * elapsed / state['steps'])}"
            if state["steps"]
            else "ETA after the first step (it compiles)"
        )
        bar.set_postfix_str(f"{eta}, loss {loss:.3f}, {rate:,.0f} tok/s", refresh=False)
        bar.update(1)

    def exclude(seconds):  # time spent between steps (an evaluation) is not training time
        if state["t0"] is not None:
            state["excluded"] += seconds

    callback.exclude = exclude
    return bar, callback


# --------------------------------------------------------------------------- several processes


class Member(NamedTuple):
    """This process in a run of several: its id, their number, the mesh of all their devices,
    and the trainer of :func:`..practice.fit.fit`'s segments (data-parallel on the mesh, θ and
    the optimizer state handed back gathered on every process)."""

    process_id: int
    processes: int
    mesh: object
    train: Callable


def launching(args) -> bool:
    """Whether this process is to start ``--processes`` (it is not one of them: no ``FA_*``)."""
    from ..practice.distributed import described

    return getattr(args, "processes", None) is not None and not described()


def launch_processes(args) -> int:
    """``--processes N``: this same command line as N processes on this machine, each with
    ``--devices-per-process`` CPU devices (:func:`..practice.distributed.launch`); process 0's
    output is this one's. A process that fails stops the others, and the run ends with one line
    naming it (:func:`failed_line`); no time limit otherwise (a run takes as long as it takes)."""
    from ..practice import distributed

    n, k = args.processes, args.devices_per_process or 1
    argv = ["-m", "formal_algorithms", *args.argv]
    try:
        distributed.launch(n, k, argv, timeout=math.inf, show=0)
    except distributed.ProcessFailed as error:
        raise ChildProcessError(failed_line(error, n)) from None
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; the {n} processes were stopped") from None
    return 0


def failed_line(error, n: int) -> str:
    """One line for a :class:`..practice.distributed.ProcessFailed` of ``n`` processes: which
    process, how it ended (its exit status or signal) and its own last error line."""
    i, status = error.process, error.returncode
    if status is None:  # the time limit (not used by launch_processes)
        return " ".join(str(error).split())
    how = f"exited with status {status}"
    if status < 0:
        name = next((s.name for s in signal.Signals if s == -status), "unknown")
        how = f"was killed by signal {-status} ({name})"
    line = f"process {i} of {n} {how}; the other processes were stopped"
    said = [t for t in error.outputs[i][2].splitlines() if t.startswith(f"{PROG}: ")]
    if said:  # the process's own one-line error (not its progress bar)
        for prefix in (f"{PROG}: ", "error: ", f"process {i} of {n}: "):
            said[-1] = said[-1].removeprefix(prefix)
        line += f"; its error: {said[-1]}"
    elif i == 0 and status > 0:  # process 0 wrote straight to this process's stderr
        line += " (its error is above)"
    return line


def join(args) -> Member | None:
    """A member of a run of several processes (the ``FA_*`` variables, set by ``--processes`` or
    a scheduler) joins the others (:func:`..practice.distributed.initialize`, before any other
    JAX work) and gets the data-parallel trainer over all their devices, θ laid out as
    ``--shard``; ``None`` for a run of one process."""
    from ..practice import distributed, parallel

    if not distributed.described():
        return None
    process_id, processes = distributed.initialize()
    args.process_label = f"process {process_id} of {processes}"  # main's errors name it
    if args.processes not in (None, processes):
        raise ValueError(
            f"--processes {args.processes}: the environment (FA_NUM_PROCESSES) describes a run "
            f"of {processes} processes"
        )
    mesh = parallel.data_mesh()
    train = functools.partial(parallel.data_parallel_train, mesh=mesh, param_sharding=args.shard)
    return Member(process_id, processes, mesh, distributed.gathered(train))


def member_line(member: Member, theta, args) -> str:
    """The line that says how a run of several processes trains: processes × devices, sequences
    per device, and θ's layout (with ``fsdp``: how many of θ's arrays are split)."""
    import jax

    from ..practice.parallel import tree_shardings

    devices, n = member.mesh.size, member.processes
    layout = "θ and the optimizer state whole on every device"
    if args.shard == "fsdp":
        specs = [s.spec for s in jax.tree.leaves(tree_shardings(member.mesh, theta, "fsdp"))]
        split = sum(any(axis is not None for axis in spec) for spec in specs)
        layout = (
            f"θ and the optimizer state FSDP-sharded ({split} of θ's {len(specs)} arrays split "
            "over the devices)"
        )
    platform = member.mesh.devices.flat[0].platform.upper()
    return (
        f"processes   {n} × {devices // n} {platform} devices joined by jax.distributed, "
        f"each step data-parallel ({args.batch_size // devices} of its {args.batch_size} "
        f"sequences on each device); {layout}"
    )
