"""See what every line computes: a trace of any run, addressed by the paper's algorithm and line.

``tr = trace(fn, *args, **kwargs)`` runs ``fn`` (any of Algorithms 1-15, the fast and cached forms,
the variants, or your own composition of the primitives) eagerly and returns a :class:`Trace`:
``tr.result`` is what ``fn`` returned and ``tr.records`` holds, in execution order, one
:class:`Record` per executed paper line: ``algorithm`` (1-15 or ``"eq. 1"``), ``line`` (the last
paper line of the statement; ``lines`` has them all), ``indices`` (the paper's loop variables,
1-based: ``{"l": 2, "h": 1}``), ``path``, ``value``, ``pseudocode``, and where it is in the code
(``function``, ``code``, ``source``).

The functions stay the transcription: the trace reads their ``# line N`` comments
(:mod:`.index`) and follows an eager run with Python's line tracing (:mod:`.recorder`).
Limits (algorithms.md, "The trace"): ``fn`` runs with ``jax.disable_jit()`` (a ``jit`` inside
``fn`` is run eagerly; values inside a ``jit`` the trace cannot disable, or inside
``lax.scan``/``while_loop`` bodies compiled by XLA, are not recorded); values inside ``vmap`` are
split per index; values inside ``jax.grad`` are their primal.
"""

from __future__ import annotations

import inspect
import math
import os
import pathlib
import re

import numpy as np

from .recorder import Record, Recorder
from .values import summary

__all__ = ["NotRecorded", "Record", "Trace", "trace"]

_PACKAGE = str(pathlib.Path(__file__).resolve().parent.parent) + "/"


class Trace:
    """What :func:`trace` returns: ``result``, ``records`` and ways to look them up."""

    def __init__(self, result, records: list[Record]):
        self.result = result
        self.records = records

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def find(self, algorithm=None, line=None, *, name=None, **indices) -> list[Record]:
        """Every record of ``algorithm`` (and ``line``: any of a record's ``lines``) whose
        indices include ``indices`` (``l=2``) and, if given, whose variable is ``name``.
        ``algorithm``, ``line`` and the indices are the paper's numbers, 1-based (0 is refused)."""
        _check_address("Trace.find", algorithm, line, indices)
        _check_index_names("Trace.find", self.records, indices)
        return [
            r
            for r in self.records
            if (algorithm is None or r.algorithm == algorithm)
            and (line is None or line in r.lines)
            and (name is None or r.name == name)
            and all(r.indices.get(k) == v for k, v in indices.items())
        ]

    def get(self, algorithm, line, *, name=None, **indices):
        """The one value of ``line`` of ``algorithm`` at ``indices`` (1-based, as the paper's).

        The line's own value: a part (a record with ``part=True``, such as Algorithm 4's weights
        ``A`` inside line 6, or the logits before the softmax of Algorithm 10's line 11) is
        returned only when ``name=`` asks for it. Records whose ``line`` is exactly ``line`` come
        first (a statement covering ``lines 5-8`` answers only if nothing finer does). Several
        records left at different indices: the error lists the indices that tell them apart.
        """
        _check_address("Trace.get", algorithm, line, indices, required=True)
        _check_index_names("Trace.get", self.records, indices)
        found = self.find(algorithm, line, name=name, **indices)
        if name is None:
            found = [r for r in found if not r.part]
        exact = [r for r in found if r.line == line]
        found = exact or found
        if not found and name is not None and self.find(algorithm, line, **indices):
            parts = sorted({r.name for r in self.find(algorithm, line, **indices)} - {None})
            raise NotRecorded(
                f"Trace.get: argument 'name' = {name!r}: {_alg(algorithm)} line {line} has no "
                f"value of that name (names recorded there: {', '.join(parts) or 'none'})"
            )
        if not found:
            _missing_argument(self, algorithm, line, indices)
            have = sorted({(r.algorithm, n) for r in self.records for n in r.lines}, key=str)
            raise NotRecorded(
                f"Trace.get: no record of {_alg(algorithm)} line {line} at {indices or 'any indices'}"
                f" (recorded: {', '.join(f'{_alg(a)} line {n}' for a, n in have[:40])}…)"
            )
        apart = sorted({k for r in found for k in r.indices if k not in indices})
        keys = {tuple(sorted(r.indices.items(), key=str)) for r in found}
        if len(keys) > 1:
            raise NotRecorded(
                f"Trace.get: {_alg(algorithm)} line {line} was recorded {len(found)} times; "
                f"give {', '.join(f'{k}=' for k in apart)} to choose one"
            )
        return found[-1].value

    def table(self, algorithm=None, line=None, **indices) -> str:
        """One row per record of :meth:`find` (the same arguments): path | pseudocode | shape |
        a summary of the value."""
        _check_address("Trace.table", algorithm, line, indices)
        rows = [("path", "pseudocode", "shape", "value")]
        for r in self.find(algorithm, line, **indices):
            text = f"(part: {r.name}) {r.pseudocode}" if r.part else r.pseudocode
            rows.append((r.path, text, _shape(r.value), summary(r.value)))
        widths = [
            min(max(len(row[i]) for row in rows), cap) for i, cap in enumerate((96, 48, 14, 60))
        ]
        out = []
        for k, row in enumerate(rows):
            out.append(" | ".join(_cut(c, w).ljust(w) for c, w in zip(row, widths, strict=True)))
            if k == 0:
                out.append("-+-".join("-" * w for w in widths))
        return "\n".join(s.rstrip() for s in out)

    def to_html(self, path) -> pathlib.Path:
        """Write the self-contained page of this trace (:mod:`.html`); returns its path."""
        from .html import write_html

        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"Trace.to_html: argument 'path' must be a file name (str or pathlib.Path), got "
                f"{type(path).__name__} {path!r:.60}"
            )
        if pathlib.Path(path).expanduser().is_dir():
            raise IsADirectoryError(
                f"Trace.to_html: argument 'path' = {str(path)!r} is a directory; give a file name "
                f"such as {str(pathlib.Path(path) / 'trace.html')!r}"
            )
        folder = pathlib.Path(path).expanduser().parent
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Trace.to_html: argument 'path' = {str(path)!r}: the folder {str(folder)!r} "
                f"does not exist (create it first)"
            )
        return write_html(self, path)


def trace(fn, *args, **kwargs) -> Trace:
    """Run ``fn(*args, **kwargs)`` eagerly and record the value of every executed paper line."""
    if not callable(fn):
        raise TypeError(
            f"trace: argument 'fn' must be callable (the function to run, e.g. "
            f"fa.d_transformer), got {type(fn).__name__} {fn!r:.60}"
        )
    files = {_PACKAGE}
    try:
        files.add(inspect.getsourcefile(inspect.unwrap(fn)) or "")
    except TypeError:  # a builtin or a callable object without source
        pass
    recorder = Recorder(files)
    result = recorder.run(fn, args, kwargs)
    return Trace(result, recorder.records)


def _check_address(method, algorithm, line, indices, *, required=False) -> None:
    """Algorithms, lines and the paper's loop indices are numbers, 1-based: refuse 0, a negative
    or a non-integer by name. ``required``: algorithm and line must be given (``get``)."""
    if (required or algorithm is not None) and not (
        (isinstance(algorithm, str) and re.fullmatch(r"eq\. \d+", algorithm))
        or (isinstance(algorithm, int) and not isinstance(algorithm, bool) and 1 <= algorithm <= 15)
    ):
        raise ValueError(
            f"{method}: argument 'algorithm' = {algorithm!r} must be 1-15 or an equation such as "
            f"'eq. 1' (the paper's numbering)"
        )
    for key, value in {"line": line, **indices}.items():
        if value is None and key == "line" and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"{method}: argument {key!r} must be an integer (the paper's 1-based "
                f"{'line number' if key == 'line' else 'index'}), got {value!r}"
            )
        if value < 1:
            raise ValueError(
                f"{method}: argument {key!r} = {value} must be at least 1: lines and the paper's "
                f"indices (l, h, t, i, …) are 1-based, as in the paper"
            )


def _check_index_names(method, records, indices) -> None:
    """An index keyword is one of the paper's loop indices (or one this trace recorded): ``layer=``
    for ``l=`` is refused by name, not answered with "no record"."""
    known = {"l", "h", "t", "i", "n", "b"} | {k for r in records for k in r.indices}
    for key in indices:
        if key not in known:
            raise TypeError(
                f"{method}: argument {key!r} is not one of the paper's loop indices; give "
                f"{', '.join(f'{k}=' for k in sorted(known))} (l: layer, h: head, i: iteration)"
            )


def _alg(algorithm) -> str:
    return f"Algorithm {algorithm}" if isinstance(algorithm, int) else str(algorithm)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _shape(value) -> str:
    shape = np.shape(value) if _is_arrayish(value) else None
    return "" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def _is_arrayish(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


class NotRecorded(KeyError, ValueError):
    """``Trace.get`` found no record, or more than one: a ``KeyError`` (a lookup that missed)
    and a ``ValueError`` (an argument's value the trace does not hold), printed as its sentence."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _missing_argument(trace, algorithm, line, indices) -> None:
    """Why ``Trace.get`` found nothing, named by the argument that misses: a ``line`` the
    algorithm never recorded, or an index (``l``, ``h``, ``t``) at a value the line never had."""
    at_line = trace.find(algorithm, line)
    lines = sorted({n for r in trace.find(algorithm, None) for n in r.lines})
    if not lines:
        names = sorted({_alg(r.algorithm) for r in trace.records})
        raise NotRecorded(
            f"Trace.get: argument 'algorithm' = {algorithm!r}: this trace recorded "
            f"{', '.join(names)}, not {_alg(algorithm)}"
        )
    if not at_line:
        raise NotRecorded(
            f"Trace.get: argument 'line' = {line}: {_alg(algorithm)} recorded lines "
            f"{', '.join(map(str, lines))}, not {line}"
        )
    for k, v in indices.items():
        values = sorted({r.indices[k] for r in at_line if k in r.indices})
        if values and v not in values:
            raise NotRecorded(
                f"Trace.get: argument {k!r} = {v}: {_alg(algorithm)} line {line} was recorded "
                f"at {k} = {', '.join(map(str, values))} (1-based)"
            )
