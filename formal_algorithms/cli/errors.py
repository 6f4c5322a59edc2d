"""How a command ends when something goes wrong: one line for any error (:func:`explain`), and a
training run that diverged or was interrupted saving its last good state first (:func:`stop_run`).
``main``'s guard prints these; the command line never shows a traceback."""

from __future__ import annotations

import errno

from .common import PROG

#: errno values of a write that ran out of room: no space, file too large, quota exceeded
FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class Diverged(FloatingPointError):
    """Training stopped on a non-finite loss; the message says where its last good state is."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; the message says where its last good state is."""


def stop_run(error, save, resume: str | None = None) -> BaseException:
    """The one-line error for a run that diverged (:class:`~.trainer.NonFiniteError`) or was
    interrupted (:class:`~.trainer.TrainingInterrupted`), after ``save(θ, opt_state, completed,
    history)`` wrote the last good state (unless it is not finite). ``resume``: how to continue."""
    from ..practice.trainer import all_finite

    k = error.completed
    if all_finite(error.theta):
        path = save(error.theta, error.opt_state, k, error.history)
        where = f"the parameters after step {k} are saved in {path}" + (
            f" ({resume})" if resume else ""
        )
    else:
        where = "no step left finite parameters, so nothing was saved"
    if isinstance(error, KeyboardInterrupt):
        return Interrupted(f"interrupted after step {k}; {where}")
    return Diverged(
        f"training diverged at step {error.step} (the loss or its gradient became NaN or "
        f"infinite); {where}; lower --lr or --weight-decay and train again"
    )


def explain(error: BaseException, command: str | None = None) -> str:
    """One line for any error a command ends with: known errors as they are, a missing optional
    dependency with the extra that brings it, out of memory with what to reduce, anything else
    with its type and a pointer to the traceback switch."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > 400:
        text = text[:400] + " …"
    if isinstance(error, ImportError):
        extra = (
            "interop"
            if error.name and error.name.split(".")[0] in ("torch", "transformers")
            else "train"
        )
        return (
            f"'{command or PROG}' needs the optional package {error.name or text!r}: install "
            f"it with pip install 'formal_algorithms[{extra}]'"
        )
    if (
        isinstance(error, MemoryError)
        or "RESOURCE_EXHAUSTED" in text
        or "out of memory" in (text.lower())
    ):
        return (
            f"out of memory ({text[:120]}); choose smaller --d-e, --layers, --batch-size or "
            "--ell-max"
        )
    if isinstance(error, OSError) and error.errno in FULL:
        where = f"writing {error.filename!r}" if error.filename else "writing a file"
        return (
            f"{where}: {error.strerror or text} (the disk, or the file-size limit, is full); free "
            "some space or choose another --out"
        )
    if isinstance(error, (ValueError, TypeError, OSError, FloatingPointError)):
        return text
    return (
        f"unexpected {type(error).__name__}: {text} (set FORMAL_ALGORITHMS_TRACEBACK=1 to see the"
        " traceback, and please report it)"
    )
