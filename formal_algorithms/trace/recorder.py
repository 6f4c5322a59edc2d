"""The mechanism: Python's own line tracing (``sys.settrace``) of an eager run.

``fn`` runs under ``jax.disable_jit()``, so every jitted step of the library runs its Python code
on concrete arrays. A frame is followed only if its function carries ``# line N`` comments
(:mod:`.index`); every other frame (JAX's own, numpy's) is left at full speed after one dictionary
lookup. When a statement that implements paper lines has run (the frame's next line event, or its
return), the variable it assigned, or the value it returned, is recorded.

Values inside ``vmap`` are batched tracers: a statement that vectorises a paper loop
(``Y = jax.vmap(attention, …)(…)  # lines 1-2`` of Algorithm 5, whose line 1 is ``for h ∈ [H]``)
names the batch axis, and each value recorded below it is split into one record per ``h``.
Values inside ``jax.grad`` are recorded as their primal (the value itself, not the tangent).
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import jax
import numpy as np

from ..paper import pseudocode
from . import jax_internals
from .index import FunctionIndex, Statement, index_file

_MISSING = object()


class Record(NamedTuple):
    """One executed paper line: see :func:`formal_algorithms.trace.trace`."""

    algorithm: int | str
    line: int
    lines: tuple[int, ...]
    indices: dict
    path: str
    value: Any
    pseudocode: str
    name: str  # the code's variable ("X", "A"), "return", or the loop variable
    function: str
    code: str
    source: str  # file:line
    part: bool = False  # a value formed on the way to the line's own (Algorithm 4's A at line 6)


class _Segment(NamedTuple):
    text: str
    fixed: dict  # loop indices in force at this level
    vector: tuple[str, ...]  # loop variables vectorised (vmap) at this level


class _Frame:
    __slots__ = (
        "index",
        "algorithm",
        "prefix",
        "vector",
        "carry",
        "pending",
        "counters",
        "current",
        "calls",
    )

    def __init__(self, index, algorithm, prefix, vector, carry=None):
        self.index: FunctionIndex = index
        self.algorithm = algorithm
        self.prefix: list[_Segment] = prefix  # the path down to this frame
        self.vector: tuple[str, ...] = vector  # vectorised loop variables, innermost last
        self.carry: dict = carry or {}  # indices of transparent callers, shown on the next segment
        self.pending: Statement | None = None
        self.counters: dict[int, int] = {}  # loop statement start -> 1-based iteration
        self.current: Statement | None = None
        self.calls: dict = {}  # code object -> how often this frame called it (loop passes)


def _label(lines) -> str:
    if len(lines) == 1:
        return f"line {lines[0]}"
    if lines == tuple(range(lines[0], lines[-1] + 1)):
        return f"lines {lines[0]}-{lines[-1]}"
    return "lines " + ", ".join(map(str, lines))


def _with_indices(text, indices):
    return f"{text} ({', '.join(f'{k}={v}' for k, v in indices.items())})" if indices else text


class Recorder:
    def __init__(self, files: set[str]):
        self.files = files
        self.records: list[Record] = []
        self.frames: dict[int, _Frame] = {}
        self.codes: dict = {}

    # ----------------------------------------------------------------------------- the hooks

    def run(self, fn, args, kwargs):
        previous = sys.gettrace()
        sys.settrace(self._call)
        try:
            with jax.disable_jit():
                return fn(*args, **kwargs)
        finally:
            sys.settrace(previous)

    def _index(self, code):
        index = self.codes.get(code, _MISSING)
        if index is _MISSING:
            index = None
            if code.co_filename in self.files or any(
                code.co_filename.startswith(f) for f in self.files if f.endswith("/")
            ):
                index = index_file(code.co_filename).get(code.co_firstlineno)
            self.codes[code] = index
        return index

    def _call(self, frame, event, arg):
        index = self._index(frame.f_code)
        if index is None:
            return None
        parent = None
        back = frame.f_back
        while back is not None:
            parent = self.frames.get(id(back))
            if parent is not None:
                break
            back = back.f_back
        self.frames[id(frame)] = self._new_frame(index, parent, back.f_lineno if parent else 0)
        return self._local

    def _new_frame(self, index, parent, lineno):
        own = index.algorithm
        if parent is None:
            algorithm = own
            prefix = [_Segment(pseudocode.label(own), {}, ())] if own is not None else []
            return _Frame(index, algorithm, prefix, ())
        if own is None and len(index.static) > 1 and parent.algorithm not in index.static:
            # a layer two algorithms print (the Post-LN layer of 8 and 9) run by a third (a
            # Post-LN Algorithm 10): its lines are the first one's, not the caller's lines
            own = index.static[0]
        algorithm = own if own is not None else parent.algorithm
        site = parent.current
        vector, prefix, carry = parent.vector, list(parent.prefix), dict(parent.carry)
        fixed = self._loop_indices(parent, lineno)
        new_vector = self._vectorised(parent, site) if site is not None else ()
        if own is not None and own != parent.algorithm:  # a new algorithm: the call site shows
            if site is not None:
                prefix.append(_Segment(_label(site.lines), {**carry, **fixed}, new_vector))
                vector = vector + new_vector
                prefix.append(_Segment(pseudocode.label(own), {}, ()))
            else:  # called from a statement without a tag: its loop indices stay with the call
                prefix.append(_Segment(pseudocode.label(own), {**carry, **fixed}, ()))
            carry = {}
        elif new_vector:  # a helper that vectorises a loop: its call site shows
            prefix.append(_Segment(_label(site.lines), {**carry, **fixed}, new_vector))
            vector, carry = vector + new_vector, {}
        else:  # a helper (or the same algorithm again): transparent, its indices carried down
            carry.update(fixed)
        # A function whose `def` names a loop's line is that loop's body, called once per pass
        # (the body of lax.fori_loop / while_loop): count the passes.
        for n in index.def_lines:
            var = pseudocode.loop_variable(algorithm, n)
            if var:
                key = (
                    index.filename,
                    index.name,
                    index.statements[0].start if index.statements else 0,
                )
                parent.calls[key] = parent.calls.get(key, 0) + 1
                carry[var] = parent.calls[key]
        state = _Frame(index, algorithm, prefix, vector, carry)
        for n in index.def_lines:  # each pass is the loop line's value, as a `for` records it
            var = pseudocode.loop_variable(algorithm, n)
            if var and algorithm is not None:
                self._record_pass(state, n, var)
        return state

    def _record_pass(self, state, line, var):
        indices = {}
        for segment in state.prefix:
            indices.update(segment.fixed)
        indices.update(state.carry)
        path = [
            _with_indices(
                seg.text, {k: indices[k] for k in (*seg.fixed, *seg.vector) if k in indices}
            )
            for seg in state.prefix
        ]
        path.append(_with_indices(_label((line,)), {var: state.carry[var]}))
        first = state.index.statements[0].start if state.index.statements else 0
        self.records.append(
            Record(
                algorithm=state.algorithm,
                line=line,
                lines=(line,),
                indices=indices,
                path=" › ".join(path),
                value=state.carry[var],
                pseudocode=pseudocode.text(state.algorithm, (line,)),
                name=var,
                function=state.index.name,
                code=f"def {state.index.name}(…)  # one pass",
                source=f"{state.index.filename}:{first}",
            )
        )

    def _local(self, frame, event, arg):
        state = self.frames.get(id(frame))
        if state is None:
            return None
        if event == "line":
            stmt = state.index.by_line.get(frame.f_lineno)
            if state.pending is not None and stmt is not state.pending:
                self._finish(state, frame, state.pending, _MISSING)
                state.pending = None
            if stmt is not None and stmt is not state.current:
                if stmt.kind == "loop":
                    self._enter_loop(state, stmt)
                state.pending = stmt
            elif stmt is None:
                self._leave_loops(state, frame.f_lineno)
            state.current = stmt
        elif event == "return":
            if state.pending is not None:
                self._finish(state, frame, state.pending, arg)
            del self.frames[id(frame)]
        return self._local

    # ------------------------------------------------------------------------------ loops

    def _enter_loop(self, state, stmt):
        # Re-entering the header from inside the body is the next iteration; from outside, the first.
        inside = (
            state.current is not None
            and state.current.start > stmt.start
            and (stmt.body and state.current.start <= stmt.body[1])
        )
        state.counters[stmt.start] = state.counters.get(stmt.start, 0) + 1 if inside else 1

    def _leave_loops(self, state, lineno):
        for stmt in state.index.statements:
            if stmt.kind == "loop" and stmt.body and not stmt.start <= lineno <= stmt.body[1]:
                state.counters.pop(stmt.start, None)

    def _loop_indices(self, state, lineno: int) -> dict:
        """The paper's loop variables in force at source line ``lineno``: its enclosing loops."""
        out = {}
        for loop in state.index.statements:
            if (
                loop.kind == "loop"
                and loop.body
                and loop.body[0] <= lineno <= loop.body[1]
                and loop.start in state.counters
            ):
                for n in loop.lines:
                    var = pseudocode.loop_variable(state.algorithm, n)
                    if var:
                        out[var] = state.counters[loop.start]
        return out

    def _vectorised(self, state, stmt) -> tuple[str, ...]:
        """The loop variables of a statement that opens a paper loop without a Python loop (not a
        ``lax.scan``: under ``disable_jit`` it runs as a Python loop, its result not stacked)."""
        if stmt.kind == "loop" or "scan(" in stmt.code:
            return ()
        names = (pseudocode.loop_variable(state.algorithm, n) for n in stmt.lines)
        # The layer loop's body overwrites one X: a statement that covers it (a whole stack in one
        # call) has the value after the last layer, never one value per l to split.
        return tuple(n for n in names if n and n != "l")

    # ---------------------------------------------------------------------------- records

    def _finish(self, state, frame, stmt, returned):
        """Record what ``stmt`` computed, once it has run."""
        found = self._statement_value(state, frame, stmt, returned)
        if found is not None and (stmt.algorithm or state.algorithm) is not None:
            self._append(state, stmt, *found)

    def _statement_value(self, state, frame, stmt, returned):
        """``(value, name, loop index)`` of a statement that has run, or ``None`` (nothing to
        record: a loop that ended, a value not there, or several lines recorded one by one)."""
        if stmt.kind == "loop":
            if stmt.body and not (stmt.body[0] <= frame.f_lineno <= stmt.body[1]):
                state.counters.pop(stmt.start, None)  # the loop ended: no iteration recorded
                return None
            var = next(
                (v for n in stmt.lines if (v := pseudocode.loop_variable(state.algorithm, n))),
                "iteration",
            )
            value = state.counters.get(stmt.start, 1)
            return value, var, {var: value}
        if stmt.kind == "return":
            return None if returned is _MISSING else (returned, stmt.part or "return", {})
        if not stmt.target:
            return None, "", {}
        names = stmt.target.split(",")
        values = [frame.f_locals.get(n, _MISSING) for n in names]
        if any(v is _MISSING for v in values):
            return None
        if stmt.part and stmt.part in names:  # `logits, cache = …  # line 3 (part: logits)`
            return values[names.index(stmt.part)], stmt.part, {}
        if len(names) > 1 and len(names) == len(stmt.lines) and stmt.part is None:
            # `Q, K, V = …  # lines 1-3`: each variable is its own line's value
            for n, line in zip(names, stmt.lines, strict=True):
                self._finish(state, frame, stmt._replace(target=n, lines=(line,)), _MISSING)
            return None
        value = values[0] if len(values) == 1 else tuple(values)
        return value, stmt.part or stmt.target, {}

    def _append(self, state, stmt, value, name, loop_index):
        """One record per index the value is split into (vmap levels, named axes)."""
        algorithm = stmt.algorithm or state.algorithm
        fixed = {}
        for segment in state.prefix:
            fixed.update(segment.fixed)
        fixed.update(state.carry)
        own = {**state.carry, **self._loop_indices(state, stmt.start), **loop_index}
        fixed.update(own)
        vector_here = self._vectorised(state, stmt)
        for extra, v in _split(value, state.vector, vector_here, stmt.axes):
            indices = {**fixed, **extra}
            path = []
            for seg in state.prefix:
                shown = {k: indices[k] for k in (*seg.fixed, *seg.vector) if k in indices}
                path.append(_with_indices(seg.text, shown))
            shown = {k: indices[k] for k in (*own, *vector_here) if k in indices}
            path.append(_with_indices(_label(stmt.lines), shown))
            self.records.append(
                Record(
                    algorithm=algorithm,
                    line=stmt.lines[-1],
                    lines=stmt.lines,
                    indices=indices,
                    path=" › ".join(path),
                    value=v,
                    pseudocode=pseudocode.text(algorithm, stmt.lines),
                    name=name,
                    function=state.index.name,
                    code=stmt.code,
                    source=f"{state.index.filename}:{stmt.start}",
                    part=stmt.part is not None,
                )
            )


def _split(value, vector, vector_here, axes=None):
    """``[(extra indices, value)]``: tracers made concrete, batched values split per index, and a
    value whose tag names its axes (``[h, :, b, :]``) split along the named ones."""
    value = jax_internals.primal(value)
    if jax_internals.batched(value) is not None:  # inside vmap: innermost level, innermost var
        pieces = _unbatch(value, list(vector))
    elif vector_here and not _named_axes(value, axes) and _is_array(value) and np.ndim(value):
        # a vectorised loop's own statement: its result stacks the iterations on axis 0
        return [({vector_here[-1]: i + 1}, value[i]) for i in range(np.shape(value)[0])]
    else:
        pieces = [({}, _concrete(value))]
    return [({**extra, **more}, v) for extra, piece in pieces for more, v in _by_axes(piece, axes)]


def _named_axes(value, axes) -> bool:
    return bool(axes) and _is_array(value) and np.ndim(value) == len(axes)


def _by_axes(value, axes):
    """A concrete value split along the axes its tag names (``[h, :, :]``: one record per h)."""
    if not _named_axes(value, axes):
        return [({}, value)]
    named = [k for k, a in enumerate(axes) if a != ":"]
    a = np.asarray(value)
    out = []
    for idx in np.ndindex(*(a.shape[k] for k in named)):
        where = [slice(None)] * a.ndim
        for k, i in zip(named, idx, strict=True):
            where[k] = i
        out.append(({axes[k]: i + 1 for k, i in zip(named, idx, strict=True)}, a[tuple(where)]))
    return out


def _unbatch(value, names):
    """Split a (possibly nested) batched value: the innermost level first, named from the end of
    ``names`` (the vectorised paper loops), then ``b`` for a batch axis the caller added."""
    found = jax_internals.batched(jax_internals.primal(value))
    if found is None:
        return [({}, _concrete(jax_internals.primal(value)))]
    inner, axis = found
    name = names.pop() if names else "b"
    results = []
    for extra, v in _unbatch(inner, list(names)):
        if axis is None or v is None:
            results.append(({**extra, name: "all"}, v))
        else:
            for i in range(np.shape(v)[axis]):
                results.append(({**extra, name: i + 1}, np.take(np.asarray(v), i, axis=axis)))
    return results


def _is_array(value):
    return isinstance(value, jax.Array | np.ndarray)


def _concrete(value):
    if isinstance(value, jax.core.Tracer):
        return None  # abstract (inside jit or another transformation): nothing to show
    return value
