"""Sampled mutation testing of formal_algorithms: does the suite notice a one-token change?

A development tool (not part of the package, not run in CI). It parses each chosen module with
``ast``, lists every place where a small change can be made (a *site*), draws a fixed-seed sample
of them, and for each sampled change (a *mutant*) runs the tests mapped to that module against a
private copy of the repository with that one change applied. A mutant is *killed* when a test
fails (or the run exceeds its time limit), and *survives* when every test passes.

Operators (one change per mutant):

- ``arith``: ``+ ↔ −``, ``* ↔ /``, ``// → /``, ``** → *``, ``% → //``;
- ``compare``: ``< ↔ ≤``, ``> ↔ ≥``, ``== ↔ !=``, ``is ↔ is not``, ``in ↔ not in``;
- ``bool``: ``and ↔ or``, a ``not`` or a unary minus dropped;
- ``const``: an int n → n + 1 (1 → 0), a float x → 2x (0.0 → 1.0), ``True ↔ False``
  (defaults included; strings are never changed);
- ``delete``: a statement replaced by ``pass`` (a call statement, an ``if``, an augmented
  assignment, or an assignment that rebinds a name already bound in the function);
- ``axis``: an integer in an ``axis=``/``in_axes=``/``out_axes=`` argument or ``moveaxis``
  changed (0 ↔ 1, others → 0), ``[:, None] ↔ [None, :]``;
- ``transpose``: ``.T`` removed, the two leading output indices of an ``einsum`` swapped.

Sites inside docstrings, f-strings, annotations and decorators are not mutated. Sites in
``paper/checks.py``, ``paper/validation.py`` and any function whose name contains ``check`` form the *checks* group;
all other sites of the modules form the *core* group. The sample is, per group, the ``--core``
(``--checks``) sites with the smallest hash of (seed, module, function, operator, text): a
mutant's id (``cache-f57e3d``) and its membership do not depend on line numbers, so an edit
elsewhere neither renames mutants nor reshuffles the sample.

Each mutant runs its module's test files (``TESTS`` below) in a private copy of the package and
tests (``git archive`` of ``--commit``, or the working tree): one pytest process at a time,
``-x``, without xdist, with a time limit. The repository itself is never modified.

Usage (from the repository's top level)::

    python tools/mutate.py --commit HEAD --list                # the sample, nothing run
    python tools/mutate.py --commit HEAD --show cache-f57e3d   # one mutant as a diff
    python tools/mutate.py --commit HEAD --run --out mutants.json   # run the sample
    python tools/mutate.py --commit HEAD --run --only cache-f57e3d  # run some of its mutants
    python tools/mutate.py --commit HEAD --run --match "in _check_cross"  # sites by regex
    python tools/mutate.py --commit HEAD --baseline            # time the unmutated test sets

The results depend on the commit, ``--seed`` (22), ``--core`` (60) and ``--checks`` (30):
record them with the results (docs/mutation.md).
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Module (relative to the repository) -> the test files (basenames, found anywhere under tests/)
# run against its mutants: the tests that exercise it directly, fast enough to run per mutant.
TESTS = {
    "formal_algorithms/paper/functions.py": [
        "test_functions_and_norms.py",
        "test_attention.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/normalisation.py": [
        "test_functions_and_norms.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/embeddings.py": [
        "test_embeddings.py",
        "test_architectures.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/attention.py": [
        "test_attention.py",
        "test_architectures.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/architectures.py": [
        "test_architectures.py",
        "test_errors.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/parameters.py": [
        "test_architectures.py",
        "test_errors.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/validation.py": [
        "test_architectures.py",
        "test_errors.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/practice/kv_attention.py": [
        "test_cache.py",
        "test_fast.py",
        "test_mutation_kills.py",
    ],
    "formal_algorithms/paper/inference.py": [
        "test_inference.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/paper/training.py": [
        "test_training.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/practice/cache.py": [
        "test_cache.py",
        "test_mutation_kills.py",
        "test_every_check_is_called.py",
    ],
    "formal_algorithms/practice/fast.py": ["test_fast.py", "test_mutation_kills.py"],
    "formal_algorithms/practice/fit.py": ["test_fit.py", "test_cli_runs_shared.py"],
    "formal_algorithms/practice/update.py": [
        "test_fast.py",
        "test_learning.py",
        "test_training.py",
        "test_mutation_kills.py",
    ],
    "formal_algorithms/paper/checks.py": [
        "test_errors.py",
        "test_embeddings.py",
        "test_attention.py",
        "test_mutation_kills_paper.py",
        "test_every_check_is_called.py",
    ],
}
CHECKS_MODULES = {"formal_algorithms/paper/checks.py", "formal_algorithms/paper/validation.py"}
EXTRA_TESTS: list[str] = []  # --tests: these files for every module instead of TESTS

ARITH = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Pow: ast.Mult,
    ast.Mod: ast.FloorDiv,
}
COMPARE = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
AXIS_KEYWORDS = {"axis", "in_axes", "out_axes"}


@dataclass
class Site:
    """One possible change: replace source[start:end] (line/column span) by ``replacement``."""

    module: str
    op: str
    line: int
    col: int
    end_line: int
    end_col: int
    original: str
    replacement: str
    function: str
    group: str = "core"
    id: str = ""


# ------------------------------------------------------------------------------ finding sites


def _skipped_nodes(tree) -> set:
    """ids of nodes never mutated: docstrings, f-strings, annotations, decorators (and below)."""
    skip = set()

    def all_below(node):
        for n in ast.walk(node):
            skip.add(id(n))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                all_below(body[0])
        if isinstance(node, ast.JoinedStr):
            all_below(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in node.decorator_list:
                all_below(d)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.returns is not None:
                all_below(node.returns)
            for a in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                if a.annotation is not None:
                    all_below(a.annotation)
        if isinstance(node, ast.AnnAssign):
            all_below(node.annotation)
        if isinstance(node, ast.ClassDef):  # NamedTuple field declarations: annotations only
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    all_below(stmt)
    return skip


def _enclosing_functions(tree) -> dict:
    """id(node) -> name of the innermost function (outermost for nested helpers) around it."""
    owner = {}

    def visit(node, name):
        for child in ast.iter_child_nodes(node):
            child_name = name
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                child_name = child.name if name == "<module>" else f"{name}.{child.name}"
            owner[id(child)] = child_name
            visit(child, child_name)

    visit(tree, "<module>")
    return owner


def _unparse(node) -> str:
    return ast.unparse(node)


def _bound_before(func, stmt) -> bool:
    """Whether the assignment ``stmt`` rebinds a name bound earlier in ``func`` (or an argument)."""
    targets = [t for t in stmt.targets if isinstance(t, ast.Name)]
    if len(targets) != len(stmt.targets) or not targets:
        return False
    names = {a.arg for a in [*func.args.args, *func.args.kwonlyargs, *func.args.posonlyargs]}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if (node.lineno, node.col_offset) < (stmt.lineno, stmt.col_offset):
                names.add(node.id)
    return all(t.id in names for t in targets)


def _einsum_swap(spec: str) -> str | None:
    if "->" not in spec:
        return None
    inputs, output = spec.split("->")
    if len(output) < 2:
        return None
    return f"{inputs}->{output[1]}{output[0]}{output[2:]}"


def find_sites(module: str, source: str) -> list[Site]:
    tree = ast.parse(source)
    skip = _skipped_nodes(tree)
    owner = _enclosing_functions(tree)
    functions = {
        id(stmt): func
        for func in ast.walk(tree)
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
        for stmt in ast.walk(func)
    }
    sites = []

    def add(node, op, new_node=None, text=None):
        original = ast.get_source_segment(source, node)
        replacement = text if text is not None else f"({_unparse(new_node)})"
        sites.append(
            Site(
                module,
                op,
                node.lineno,
                node.col_offset,
                node.end_lineno,
                node.end_col_offset,
                original,
                replacement,
                owner.get(id(node), "<module>"),
            )  # fmt: skip
        )

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in ARITH:
            new = copy.deepcopy(node)
            new.op = ARITH[type(node.op)]()
            add(node, "arith", new)
        elif isinstance(node, ast.Compare):
            for i, cmp in enumerate(node.ops):
                if type(cmp) in COMPARE:
                    new = copy.deepcopy(node)
                    new.ops[i] = COMPARE[type(cmp)]()
                    add(node, "compare", new)
        elif isinstance(node, ast.BoolOp):
            new = copy.deepcopy(node)
            new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            add(node, "bool", new)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            if not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
                add(node, "bool", node.operand)
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)):
            v = node.value
            if isinstance(v, bool):
                new = ast.Constant(not v)
            elif isinstance(v, int):
                new = ast.Constant(0 if v == 1 else v + 1)
            elif isinstance(v, float):
                new = ast.Constant(1.0 if v == 0 else 2 * v)
            else:
                continue
            add(node, "const", new)
        elif isinstance(node, ast.Attribute) and node.attr == "T":
            add(node, "transpose", node.value)
        elif isinstance(node, ast.Call):
            name = _unparse(node.func)
            if name.endswith("einsum") and node.args and isinstance(node.args[0], ast.Constant):
                swapped = _einsum_swap(node.args[0].value)
                if swapped and id(node.args[0]) not in skip:
                    add(node.args[0], "transpose", text=repr(swapped))
            for kw in node.keywords:
                if kw.arg in AXIS_KEYWORDS:
                    _axis_sites(kw.value, add)
            if name.endswith("moveaxis"):
                for arg in node.args[1:]:
                    _axis_sites(arg, add)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
            elts = node.slice.elts
            if len(elts) == 2 and _is_full_slice(elts[0]) and _is_none(elts[1]):
                add(node.slice, "axis", text="None, :")
            elif len(elts) == 2 and _is_none(elts[0]) and _is_full_slice(elts[1]):
                add(node.slice, "axis", text=":, None")
        if isinstance(node, ast.stmt) and id(node) in functions:
            func = functions[id(node)]
            if node is func or node in func.body[:1] and len(func.body) == 1:
                continue
            deletable = (
                isinstance(node, (ast.If, ast.AugAssign))
                or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
                or (isinstance(node, ast.Assign) and _bound_before(func, node))
            )
            if deletable and not _only_statement(func, node):
                add(node, "delete", text="pass")
    # Axis sites are found twice (as a Constant and as an axis); keep the axis one.
    axis_spans = {(s.line, s.col) for s in sites if s.op == "axis"}
    sites = [s for s in sites if not (s.op == "const" and (s.line, s.col) in axis_spans)]
    sites.sort(key=lambda s: (s.line, s.col, s.op, s.replacement))
    for s in sites:
        in_checks = module in CHECKS_MODULES or "check" in s.function
        s.group = "checks" if in_checks else "core"
    return sites


def _only_statement(func, stmt) -> bool:
    for node in ast.walk(func):
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            if isinstance(block, list) and stmt in block:
                return len(block) == 1
    return False


def _is_full_slice(node) -> bool:
    return isinstance(node, ast.Slice) and node.lower is node.upper is node.step is None


def _is_none(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _axis_sites(value, add):
    for n in ast.walk(value):
        if (
            isinstance(n, ast.Constant)
            and isinstance(n.value, int)
            and not isinstance(n.value, bool)
        ):
            add(n, "axis", ast.Constant(1 if n.value == 0 else 0))
        elif (
            isinstance(n, ast.UnaryOp)
            and isinstance(n.op, ast.USub)
            and isinstance(n.operand, ast.Constant)
        ):
            add(n, "axis", ast.Constant(0))


# ------------------------------------------------------------------------------- the sample


def read_source(repo: Path, module: str, commit: str | None) -> str:
    if commit is None:
        return (repo / module).read_text()
    return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{module}"],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip


def all_sites(repo: Path, modules, commit: str | None) -> list[Site]:
    sites = []
    for module in modules:
        sites += find_sites(module, read_source(repo, module, commit))
    return sites


def sample(sites, seed: int, n_core: int, n_checks: int) -> list[Site]:
    """The n sites of each group with the smallest hash of (seed, what the change is).

    A site's hash depends on its module, function, operator and text (not on its line number), so
    an edit elsewhere in the code neither renames a mutant nor reshuffles the sample: it can only
    add or remove its own sites.
    """
    seen = {}
    keyed = []
    for s in sites:
        what = (s.module, s.function, s.op, s.original, s.replacement)
        seen[what] = seen.get(what, 0) + 1
        digest = hashlib.sha256(repr((seed, *what, seen[what])).encode()).hexdigest()
        s.id = f"{Path(s.module).stem}-{digest[-6:]}"
        keyed.append((digest, s))
    chosen = []
    for group, n in (("core", n_core), ("checks", n_checks)):
        pool = sorted((d, s) for d, s in keyed if s.group == group)
        chosen += [s for _, s in pool[:n]]
    return sorted(chosen, key=lambda s: (s.group != "core", s.module, s.line, s.col))


def apply(source: str, site: Site) -> str:
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    start = offsets[site.line - 1] + site.col
    end = offsets[site.end_line - 1] + site.end_col
    mutated = (data[:start] + site.replacement.encode() + data[end:]).decode()
    ast.parse(mutated)  # a mutant is always valid Python
    return mutated


# ------------------------------------------------------------------------------- running


def copy_repo(repo: Path, into: Path, commit: str | None) -> Path:
    """The package, the tests and pyproject.toml, from the working tree or from ``commit``."""
    target = into / "repo"
    if commit is not None:
        target.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit, "formal_algorithms", "tests",
             "pyproject.toml"], check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return target
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", "runs")
    for name in ("formal_algorithms", "tests"):
        shutil.copytree(repo / name, target / name, ignore=ignore)
    shutil.copy(repo / "pyproject.toml", target / "pyproject.toml")
    return target


def test_files(repo: Path, module: str) -> list[str]:
    files = []
    for name in EXTRA_TESTS or TESTS[module]:
        found = sorted(repo.glob(f"tests/**/{name}"))
        files += [str(p.relative_to(repo)) for p in found]
    return files


def run_tests(copy_root: Path, files, timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, the last lines of the output)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:randomly",
           "-p", "no:cacheprovider", "-p", "no:benchmark", "-o", "addopts=", "-x", "-q", "--no-header", *files]  # fmt: skip
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=copy_root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "pass" if proc.returncode == 0 else "fail"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        status = "timeout"
    tail = "\n".join(line for line in out.splitlines() if line.strip())[-1500:]
    return status, time.time() - t0, tail


def run(
    repo: Path,
    mutants,
    timeout_factor: float,
    log,
    modules=None,
    fixed_timeout=None,
    commit=None,
    verbose=False,
    out=None,
):
    results = []
    with tempfile.TemporaryDirectory(prefix="fa-mutants-") as tmp:
        root = copy_repo(repo, Path(tmp), commit)
        files = sorted({f for module in TESTS for f in test_files(root, module)})
        status, _, tail = run_tests(root, ["--collect-only", *files], timeout=1800)
        if status != "pass":  # e.g. a commit whose imports need an uncommitted file
            raise SystemExit(f"the unmutated copy does not even collect its tests:\n{tail}")
        baseline = {}
        for module in modules or sorted({m.module for m in mutants}):
            if fixed_timeout:
                baseline[module] = fixed_timeout / timeout_factor
                continue
            files = test_files(root, module)
            status, seconds, tail = run_tests(root, files, timeout=1800)
            if status != "pass":
                raise SystemExit(f"the unmutated tests fail for {module}:\n{tail}")
            baseline[module] = seconds
            log(f"baseline {module}: {len(files)} files, {seconds:.0f} s")
        for m in mutants:
            path = root / m.module
            original = path.read_text()
            path.write_text(apply(original, m))
            try:
                limit = max(60.0, timeout_factor * baseline[m.module])
                status, seconds, tail = run_tests(root, test_files(root, m.module), limit)
            finally:
                path.write_text(original)
            outcome = {"pass": "survived", "fail": "killed", "timeout": "killed (timeout)"}[status]
            failed = [line for line in tail.splitlines() if line.startswith(("FAILED", "ERROR"))]
            results.append({**asdict(m), "outcome": outcome, "seconds": round(seconds, 1),
                            "failed": failed[:3]})  # fmt: skip
            if out is not None:  # after every mutant: a long run can be stopped and read
                out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
            log(f"{m.id} {outcome:16s} {seconds:5.0f} s  {describe(m)}")
            if verbose:
                log(tail)
    return results


def describe(m: Site) -> str:
    short = m.module.replace("formal_algorithms/", "")
    return f"{short}:{m.line} [{m.op}] {m.original!r} -> {m.replacement!r} in {m.function}"


def print_table(results):
    for group in ("core", "checks"):
        rs = [r for r in results if r["group"] == group]
        killed = sum(r["outcome"].startswith("killed") for r in rs)
        print(f"- {group}: {killed} of {len(rs)} killed")
    print("\n| mutant | change | outcome | first failing test |\n|---|---|---|---|")
    for r in results:
        change = f"`{r['module'].split('/')[-1]}:{r['line']}` {r['op']} in `{r['function']}`"
        first = r["failed"][0].split(" - ")[0] if r["failed"] else ""
        print(f"| {r['id']} | {change} | {r['outcome']} | {first} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--commit", help="mutate this commit (default: the working tree)")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--core", type=int, default=60, help="core mutants in the sample")
    parser.add_argument("--checks", type=int, default=30, help="checks mutants in the sample")
    parser.add_argument("--list", action="store_true", help="print the sample and stop")
    parser.add_argument("--show", metavar="ID", help="print one mutant's changed lines")
    parser.add_argument("--run", action="store_true", help="run the sample's mutants")
    parser.add_argument("--baseline", action="store_true", help="time the unmutated tests")
    parser.add_argument("--match", nargs="*", metavar="REGEX",
                        help="take the sites whose description matches instead of the sample")  # fmt: skip
    parser.add_argument("--only", nargs="*", metavar="ID", help="run only these mutants")
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a mutant's time limit: this times the unmutated tests' time")  # fmt: skip
    parser.add_argument("--timeout", type=float,
                        help="a fixed time limit per mutant in seconds (skips the baseline run)")  # fmt: skip
    parser.add_argument("--tests", nargs="*", metavar="FILE",
                        help="run these test files (basenames) for every mutant instead of the map")  # fmt: skip
    parser.add_argument("--table", type=Path, metavar="JSON", help="print results as markdown")
    parser.add_argument("--verbose", action="store_true", help="print each run's last lines")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    EXTRA_TESTS[:] = args.tests or []
    if args.table:  # a results file as the markdown of docs/mutation.md
        print_table(json.loads(args.table.read_text()))
        return

    if args.commit is not None:  # a fixed commit: its hash, so that the record names it
        args.commit = subprocess.run(["git", "-C", str(args.repo), "rev-parse", args.commit],
                                     check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
        print(f"commit {args.commit}")
    sites = all_sites(args.repo, TESTS, args.commit)
    mutants = sample(sites, args.seed, args.core, args.checks)
    counts = {g: sum(s.group == g for s in sites) for g in ("core", "checks")}
    print(f"{len(sites)} sites ({counts['core']} core, {counts['checks']} checks); "
          f"sample of {len(mutants)} with seed {args.seed}", flush=True)  # fmt: skip
    if args.match:  # chosen by what they change, outside the sample
        mutants = [s for s in sites if any(re.search(p, describe(s)) for p in args.match)]
        print(f"{len(mutants)} sites match {args.match}")
    if args.list:
        for m in mutants:
            print(f"{m.id}  {describe(m)}")
    if args.show:
        (m,) = [m for m in sites if m.id == args.show]
        source = read_source(args.repo, m.module, args.commit)
        print(describe(m))
        diff = difflib.unified_diff(source.splitlines(), apply(source, m).splitlines(),
                                    m.module, f"{m.module} ({m.id})", lineterm="")  # fmt: skip
        print("\n".join(diff))
    if args.baseline:
        run(
            args.repo,
            [],
            args.timeout_factor,
            lambda s: print(s, flush=True),
            list(TESTS),
            commit=args.commit,
        )
    if args.run:
        if args.only:
            mutants = [m for m in mutants if m.id in set(args.only)]
        results = run(
            args.repo,
            mutants,
            args.timeout_factor,
            lambda s: print(s, flush=True),
            fixed_timeout=args.timeout,
            commit=args.commit,
            verbose=args.verbose,
            out=args.out,
        )
        for group in ("core", "checks"):
            rs = [r for r in results if r["group"] == group]
            killed = sum(r["outcome"].startswith("killed") for r in rs)
            print(f"{group}: {killed}/{len(rs)} killed")


if __name__ == "__main__":
    main()
