"""Where each paper line lives in the source: the ``# line N`` comments, read once per file.

A statement carries paper lines when its own (inline) comment, or the full-line comment block just
above it, starts with ``line N``, ``lines N-M`` or ``lines N, M``. A ``def`` with such a comment
lends its lines to the returns of its body that have none (``def loss(th):  # lines 3-5``).
A function belongs to the algorithm its docstring's first words name (``Algorithm 4, …``,
``Lines 5-8 of Algorithm 10``, ``Eq. 1 …``); otherwise it inherits the caller's.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from typing import NamedTuple

_LINES = re.compile(r"^lines? (\d+)((?:\s*(?:[-–]|,)\s*\d+)*)")
_DOC = re.compile(r"^(?:Lines? [\d\-–, ]+ of )?(?:Algorithm|Alg\.?) (\d+)\b(?!s)|^Eq\. (\d+)\b")


class Statement(NamedTuple):
    start: int  # first physical line of the statement
    end: int  # last physical line of its header (simple statements: of the whole statement)
    lines: tuple[int, ...]  # the paper's lines it implements
    kind: str  # "assign", "return", "expr", "loop", "other"
    target: str | None  # the variable whose value the line computes (assign, expr)
    body: tuple[int, int] | None  # a loop's body span
    code: str  # the statement's source (its header for a loop)


class FunctionIndex(NamedTuple):
    name: str
    algorithm: int | str | None
    statements: tuple[Statement, ...]
    by_line: dict  # physical line -> Statement
    filename: str
    def_lines: tuple[int, ...]  # the lines its `def` comment names (a loop body called per pass)


def parse_lines(comment: str) -> tuple[int, ...] | None:
    """``"lines 5-8, Mask ≡ 1"`` -> ``(5, 6, 7, 8)``; ``None`` unless the comment starts so."""
    match = _LINES.match(comment.strip())
    if not match:
        return None
    numbers = [int(match.group(1))]
    for sep, n in re.findall(r"\s*([-–]|,)\s*(\d+)", match.group(2)):
        n = int(n)
        numbers.extend(range(numbers[-1] + 1, n + 1) if sep in "-–" else [n])
    return tuple(dict.fromkeys(numbers))


def docstring_algorithm(doc: str | None) -> int | str | None:
    match = _DOC.match((doc or "").strip())
    if not match:
        return None
    return int(match.group(1)) if match.group(1) else f"eq. {match.group(2)}"


@functools.cache
def index_file(filename: str) -> dict[int, FunctionIndex]:
    """``{first line of a function's code object: FunctionIndex}`` for the functions of a file
    that carry at least one paper line. Unreadable files give ``{}``."""
    try:
        with open(filename, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    comments, full_line = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
            if not tok.line[: tok.start[1]].strip():
                full_line.add(tok.start[0])
    lines_of_source = source.splitlines()
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            index = _index_function(node, comments, full_line, lines_of_source, filename)
            if index is not None:
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                out[first] = index
    return out


def _comment_lines(start, end, comments, full_line):
    for n in range(start, end + 1):
        if n in comments and n not in full_line:
            found = parse_lines(comments[n])
            if found:
                return found
    n = start - 1  # the full-line comment block just above
    while n in full_line:
        found = parse_lines(comments[n])
        if found:
            return found
        n -= 1
    return None


def _header_end(node) -> int:
    if isinstance(node, ast.For | ast.While | ast.If | ast.With):
        return node.body[0].lineno - 1 if node.body[0].lineno > node.lineno else node.lineno
    return node.end_lineno


def _target(node) -> str | None:
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        while isinstance(target, ast.Subscript | ast.Attribute):
            target = target.value
        if isinstance(target, ast.Name):
            return target.id
        if isinstance(target, ast.Tuple):
            return ",".join(e.id for e in target.elts if isinstance(e, ast.Name))
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            return func.value.id  # x_hat.append(y): the list after the call
    return None


def _kind(node) -> str:
    if isinstance(node, ast.For | ast.While):
        return "loop"
    if isinstance(node, ast.Return):
        return "return"
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
        return "assign"
    if isinstance(node, ast.Expr):
        return "expr"
    return "other"


def _statements(body):
    """The statements of a function body, descending into compound statements but not into
    nested functions or classes (they are code objects of their own)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _statements(getattr(node, field, []) or [])


def _index_function(node, comments, full_line, source_lines, filename):
    default = None
    if node.body:  # `def loss(th):  # lines 3-5` lends its lines to unannotated returns
        default = _comment_lines(node.lineno, node.body[0].lineno - 1, comments, full_line)
    statements = []
    for stmt in _statements(node.body):
        end = _header_end(stmt)
        lines = _comment_lines(stmt.lineno, end, comments, full_line)
        if lines is None and default and isinstance(stmt, ast.Return):
            lines = default
        if lines is None:
            continue
        body = None
        if isinstance(stmt, ast.For | ast.While):
            body = (stmt.body[0].lineno, stmt.body[-1].end_lineno)
        code = "\n".join(source_lines[stmt.lineno - 1 : end]).strip()
        statements.append(
            Statement(stmt.lineno, end, lines, _kind(stmt), _target(stmt), body, code)
        )
    algorithm = docstring_algorithm(ast.get_docstring(node))
    if not statements and algorithm is None:
        return None  # neither lines nor an algorithm: the trace passes it by
    by_line = {}
    for s in statements:
        for n in range(s.start, s.end + 1):
            by_line[n] = s
    return FunctionIndex(
        node.name,
        algorithm,
        tuple(statements),
        by_line,
        filename,
        default or (),
    )
