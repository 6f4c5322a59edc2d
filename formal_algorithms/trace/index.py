"""Where each paper line lives in the source: the ``# line N`` comments, read once per file.

A statement carries paper lines when its own (inline) comment, or the full-line comment block just
above it, starts with ``line N``, ``lines N-M`` or ``lines N, M`` (the tag). A tag followed by
``(part: name)`` marks a value the code forms on the way to the line's own value (Algorithm 4's
weights ``A`` inside line 6, the logits before line 11's softmax): the trace records it under
``name`` as a part, which :meth:`Trace.get` returns only when asked for by name. A tag may end
with the paper's indices of the value's axes, ``[h, :, b, :]``: a value computed for every head
and sequence at once is recorded once per ``h`` and ``b`` (the ``:`` axes kept). A ``def`` with such a comment
lends its lines to the returns of its body that have none (``def loss(th):  # lines 3-5``).
A function belongs to the algorithm its docstring's first words name (``Algorithm 4, …``,
``Lines 5-8 of Algorithm 10``, ``Eq. 1 …``); otherwise it inherits the caller's.
"""

from __future__ import annotations

import ast
import functools
import io
import pathlib
import re
import tokenize
from typing import NamedTuple

_LINES = re.compile(r"^(?:Alg(?:orithm)? (\d+),? )?lines? (\d+)((?:\s*(?:[-–]|,)\s*\d+)*)")
_PART = re.compile(r"\s*\(part(?:: ?([^\s)]+))?\)")
_AXES = re.compile(r"\s*\[((?:\s*(?:[a-z]|:)\s*,)*\s*(?:[a-z]|:)\s*)\]")
_DOC = re.compile(r"^(?:Lines? [\d\-–, ]+ of )?(?:Algorithm|Alg\.?) (\d+)\b(?!s)|^Eq\. (\d+)\b")


class Statement(NamedTuple):
    start: int  # first physical line of the statement
    end: int  # last physical line of its header (simple statements: of the whole statement)
    lines: tuple[int, ...]  # the paper's lines it implements
    algorithm: int | None  # the algorithm its comment names (``# Alg 5 lines 3-4``), else None
    kind: str  # "assign", "return", "expr", "loop", "other"
    target: str | None  # the variable whose value the line computes (assign, expr)
    body: tuple[int, int] | None  # a loop's body span
    code: str  # the statement's source (its header for a loop)
    part: str | None = None  # a part of its line: the name it is recorded under
    axes: tuple[str, ...] | None = None  # the paper's index of each axis of the value, or ":"


class FunctionIndex(NamedTuple):
    name: str
    algorithm: int | str | None
    statements: tuple[Statement, ...]
    by_line: dict  # physical line -> Statement
    filename: str
    def_lines: tuple[int, ...]  # the lines its `def` comment names (a loop body called per pass)
    static: tuple  # every algorithm its docstring names, else its enclosing function's


def parse_lines(comment: str):
    """``"lines 5-8, Mask ≡ 1"`` -> ``(None, (5, 6, 7, 8))``; ``"Alg 5 lines 3-4"`` ->
    ``(5, (3, 4))``; ``None`` unless the comment starts so."""
    tag = parse_tag(comment)
    return None if tag is None else tag[:2]


def parse_tag(comment: str):
    """``(algorithm or None, lines, part or None, axes or None)`` of a tag:
    ``"line 6 (part: A): weights"`` -> ``(None, (6,), "A", None)``; ``(part)`` alone gives ``""``
    (the assigned variable's name); ``"line 4 [h, b, :, :]"`` -> axes ``("h", "b", ":", ":")``."""
    match = _LINES.match(comment.strip())
    if not match:
        return None
    numbers = [int(match.group(2))]
    for sep, n in re.findall(r"\s*([-–]|,)\s*(\d+)", match.group(3)):
        n = int(n)
        numbers.extend(range(numbers[-1] + 1, n + 1) if sep in "-–" else [n])
    rest = comment.strip()[match.end() :]
    part = _PART.match(rest)
    rest = rest[part.end() :] if part else rest
    axes = _AXES.match(rest)
    return (
        int(match.group(1)) if match.group(1) else None,
        tuple(dict.fromkeys(numbers)),
        None if part is None else (part.group(1) or ""),
        None if axes is None else tuple(a.strip() for a in axes.group(1).split(",")),
    )


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

    def visit(node, enclosing):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                static = docstring_algorithms(ast.get_docstring(child)) or enclosing
                index = _index_function(child, comments, full_line, lines_of_source, filename)
                if index is not None:
                    first = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                    out[first] = index._replace(static=static)
                visit(child, static)
            else:
                visit(child, enclosing)

    visit(tree, ())
    return out


def docstring_algorithms(doc: str | None) -> tuple:
    """Every algorithm the first sentence of a docstring names: ``"Lines 5-8 of Algorithms 8
    (encoder) and 9"`` -> ``(8, 9)``."""
    first = re.split(r"(?<=[.:])\s", (doc or "").strip(), maxsplit=1)[0]
    found = []
    for match in re.finditer(
        r"\b(?:Algorithms?|Alg\.?) ((?:\d+(?: \([^)]*\))?(?:, | and |/)?)+)", first
    ):
        found += [int(n) for n in re.findall(r"\d+", re.sub(r"\([^)]*\)", "", match.group(1)))]
    eq = re.match(r"Eq\. (\d+)", (doc or "").strip())
    return tuple(dict.fromkeys(found)) or ((f"eq. {eq.group(1)}",) if eq else ())


def line_index(filenames) -> dict:
    """``{(algorithm, line): [function, …]}`` over the statically known algorithms of every
    function with paper lines in ``filenames`` (the table algorithms.md's "Line index" shows)."""
    table = {}
    for filename in filenames:
        module = pathlib.Path(filename).stem
        for index in index_file(str(filename)).values():
            tagged = [(stmt.algorithm, stmt.lines) for stmt in index.statements]
            for own, lines in [*tagged, (None, index.def_lines)]:  # a loop body's `def` too
                for algorithm in (own,) if own else index.static:
                    for line in lines:
                        names = table.setdefault((algorithm, line), [])
                        if f"{module}.{index.name}" not in names:
                            names.append(f"{module}.{index.name}")
    return table


def _comment_lines(start, end, comments, full_line):
    for n in range(start, end + 1):
        if n in comments and n not in full_line:
            found = parse_tag(comments[n])
            if found:
                return found
    n = start - 1  # the full-line comment block just above
    while n in full_line:
        found = parse_tag(comments[n])
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
        default = default and default[:2] + (None, None)  # a `def` lends lines, never a part
    statements = []
    for stmt in _statements(node.body):
        end = _header_end(stmt)
        found = _comment_lines(stmt.lineno, end, comments, full_line)
        if (
            found is None
            and default
            and isinstance(stmt, ast.Return)
            and not isinstance(stmt.value, ast.Tuple)
        ):  # a returned tuple (a loop body's carry) is no paper value
            found = default
        if found is None:
            continue
        own, lines, part, axes = found
        body = None
        if isinstance(stmt, ast.For | ast.While):
            body = (stmt.body[0].lineno, stmt.body[-1].end_lineno)
        code = "\n".join(source_lines[stmt.lineno - 1 : end]).strip()
        statements.append(
            Statement(
                stmt.lineno, end, lines, own, _kind(stmt), _target(stmt), body, code, part, axes
            )
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
        default[1] if default else (),
        (),
    )


def package_files() -> list[pathlib.Path]:
    """The files whose lines algorithms.md's "Line index" lists: the paper's algorithms, the
    cached forms of Algorithms 14 and 15, and the attention over stored keys they share."""
    root = pathlib.Path(__file__).resolve().parent.parent
    practice = [root / "practice" / name for name in ("cache.py", "kv_attention.py")]
    return sorted(root.glob("paper/*.py")) + practice


def line_index_markdown() -> str:
    """The "Line index" table of algorithms.md: every line of the paper's pseudocode (the table in
    :mod:`formal_algorithms.paper.pseudocode`) and the functions whose ``# line`` comments
    implement it; regenerate with ``python -m formal_algorithms.trace``."""
    from ..paper.pseudocode import PSEUDOCODE

    table = line_index(package_files())
    rows = ["| Algorithm | Line | Pseudocode | Code |", "|---|---|---|---|"]
    for algorithm, lines in PSEUDOCODE.items():
        for line, text in lines.items():
            code = ", ".join(f"`{name}`" for name in table.get((algorithm, line), [])) or "—"
            cell = text.replace("|", "\\|")  # a table cell: the pipes of the notation escaped
            rows.append(f"| {algorithm} | {line} | `{cell}` | {code} |")
    return "\n".join(rows)


# A comment that looks meant as a tag but is not one: a bare number or range (``# 8``,
# ``# 4-9``, ``# 8: …``), ``# line5``, ``# ln 5``, ``# l. 5``. (Prose that begins "Line 4 is …"
# is prose.)
_NEAR_MISS = re.compile(r"^(?:\d+(?:\s*[-–,]\s*\d+)*(?::|\s*$)|(?:ln|l\.)\s*\d|lines?\d)")


def tag_problems(filenames) -> list[str]:
    """Every ``# line`` tag in ``filenames`` that cannot be right: a comment that looks like a tag
    but does not parse, a part without a name on a ``return``, or a line that the algorithm the
    tag belongs to does not have (algorithms known from the docstrings or the tag itself)."""
    from ..paper.pseudocode import PSEUDOCODE

    out = []
    for filename in filenames:
        source = pathlib.Path(filename).read_text(encoding="utf-8")
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                tag = parse_tag(text)
                if tag is not None and "(part" in text and tag[2] is None:
                    out.append(
                        f"{filename}:{tok.start[0]}: {tok.string!r}: a part's name is one "
                        "word, '(part: name)'"
                    )
                if _NEAR_MISS.match(text) and tag is None:
                    out.append(
                        f"{filename}:{tok.start[0]}: {tok.string!r} looks like a tag but is not one"
                    )
        for index in index_file(str(filename)).values():
            for stmt in index.statements:
                where = f"{filename}:{stmt.start} ({index.name})"
                if stmt.part == "" and stmt.kind == "return":
                    out.append(f"{where}: a returned part needs a name: (part: name)")
                own = stmt.algorithm or index.algorithm  # what the recorder will name
                algorithms = (own,) if own else index.static
                for algorithm in algorithms:
                    missing = [n for n in stmt.lines if n not in PSEUDOCODE.get(algorithm, {})]
                    if missing:
                        out.append(f"{where}: Algorithm {algorithm} has no line {missing}")
    return out
