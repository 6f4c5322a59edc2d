"""The package's architecture, checked by parsing it: folders are layers and imports point down.

- Layer 1, ``formal_algorithms.paper``: the paper's algorithms; imports nothing else of the package.
- Layer 2, ``formal_algorithms.practice``: §8's practical forms; imports only the paper.
- Layer 3, the tools (command line, benchmark, interop, variants, testing, trace, families,
  pictures): import the layers below and each other, without cycles.

No module imports a ``_private`` name of another module, nor a ``_private`` module from outside
its package (a shared helper is public where it lives), no import cycle exists (lazy imports
inside functions count: a cycle is a cycle), and the top-level API is pinned:
``formal_algorithms.__all__`` changes only on purpose.
"""

from __future__ import annotations

import ast
import pathlib

import formal_algorithms as fa

PACKAGE = pathlib.Path(fa.__file__).parent
ROOT = "formal_algorithms"
LAYERS = {"paper": 1, "practice": 2}  # everything else below the root is a tool: layer 3


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """Dotted module name -> (file, is_package)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str):
    """Yield ``(target module, imported name or None, line)`` for every import of the package."""
    path, is_package = MODULES[module]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # `from . import fast`: the submodule itself
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _layer(module: str) -> int:
    parts = module.split(".")
    return 0 if len(parts) == 1 else LAYERS.get(parts[1], 3)


def _attribute_privates(module: str):
    """``training.mask_for`` where ``training`` was imported from the package."""
    path, _ = MODULES[module]
    tree = ast.parse(path.read_text())
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
    package_names = {
        name for name in bound if any(m.split(".")[-1] == name for m in MODULES) or name == "fa"
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in package_names
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield f"{node.value.id}.{node.attr}", node.lineno


def _private_module_outside(module: str, target: str) -> bool:
    """``target`` has a ``_private`` part and ``module`` is outside the package that holds it."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return not module.startswith(".".join(parts[:i]) + ".")
    return False


def test_no_private_name_is_imported_from_another_module():
    found = []
    for module in MODULES:
        for target, name, line in _imports(module):
            if name and name.startswith("_") and target != module:
                found.append(f"{module}:{line} imports {name} from {target}")
            if _private_module_outside(module, target):
                found.append(f"{module}:{line} imports the private module {target}")
        for use, line in _attribute_privates(module):
            found.append(f"{module}:{line} uses {use}")
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_imports_point_down_the_layers():
    found = []
    for module in MODULES:
        if module == ROOT:
            continue  # the root re-exports the public API of every layer
        for target, _, line in _imports(module):
            if target == ROOT or _layer(target) > _layer(module):
                found.append(f"{module}:{line} (layer {_layer(module)}) imports {target}")
    assert not found, "imports pointing up:\n" + "\n".join(found)


def test_no_import_cycle():
    graph = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in _imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    # A package's __init__ re-exporting its own submodules is not a cycle with them.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The rules above fail on a package that breaks them (they are not vacuous)."""
    pkg = tmp_path / ROOT
    for sub in ("paper", "practice"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "paper" / "a.py").write_text("from ..practice.b import helper\n")
    (pkg / "practice" / "b.py").write_text("from ..paper.a import _private\n")
    (pkg / "paper" / "_helpers.py").write_text("")
    (pkg / "paper" / "c.py").write_text("from ._helpers import *\n")  # inside its package: allowed
    (pkg / "practice" / "d.py").write_text("from ..paper._helpers import *\n")  # outside
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    monkeypatch.setattr(__import__(__name__), "MODULES", _modules())
    private = [
        (m, t) for m in sorted(MODULES) for t, _, _ in _imports(m) if _private_module_outside(m, t)
    ]
    assert private == [(f"{ROOT}.practice.d", f"{ROOT}.paper._helpers")]
    for rule in (
        test_no_private_name_is_imported_from_another_module,
        test_imports_point_down_the_layers,
        test_no_import_cycle,
    ):
        try:
            rule()
        except AssertionError:
            continue
        raise AssertionError(f"{rule.__name__} passed on a package that breaks it")


# The public API: every name `import formal_algorithms as fa` offers. Change it on purpose only.
PUBLIC_API = sorted(
    """
    AttentionParams CharTokenizer DTransformerParams DecoderLayer EDTransformerParams EPS
    ETransformerParams Layer MHAttentionParams attention bidirectional_mask causal_mask
    check_params d_inference d_inference_cached d_inference_cached_batch d_loss d_training
    d_transformer d_transformer_logits draw_mask e_loss e_training e_transformer
    e_transformer_logits ed_decode_logits ed_decoder_layer ed_encode ed_inference
    ed_inference_cached ed_inference_cached_batch ed_loss ed_training ed_transformer
    ed_transformer_logits embed gelu gelu_tanh hyperparameters init_attention init_d_transformer
    init_e_transformer init_ed_transformer init_embeddings init_layer_norm init_mh_attention
    key_padding_mask layer_norm layer_norm_columns log_softmax mask_tokens mh_attention mlp
    paper_sinusoidal_W_p positional_embedding post_ln_layer pre_ln_layer relu rms_norm
    rms_norm_columns sample_token single_query_attention softmax special_tokens token_embedding
    unembedding unembedding_matrix unidirectional_mask vaswani_sinusoidal_W_p Trace trace
    """.split()
)


def test_public_api_is_pinned():
    assert sorted(fa.__all__) == PUBLIC_API
    for name in fa.__all__:
        assert getattr(fa, name) is not None, name


def test_fa_trace_is_the_function_in_a_fresh_interpreter_and_after_every_submodule():
    """``import formal_algorithms as fa; fa.trace(fn, …)`` as the README writes it: the function
    after the package alone, and still the function once every submodule has been imported (the
    import system binds a subpackage's name on its parent when it first loads it)."""
    import subprocess
    import sys

    program = (
        "import importlib, pkgutil, types\n"
        "import formal_algorithms as fa\n"
        "assert isinstance(fa.trace, types.FunctionType), fa.trace\n"
        "for m in pkgutil.walk_packages(fa.__path__, 'formal_algorithms.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "import formal_algorithms.trace\n"
        "from formal_algorithms.trace import trace\n"
        "assert fa.trace is trace and isinstance(fa.trace, types.FunctionType), fa.trace\n"
        "import jax\n"
        "W = fa.init_attention(jax.random.key(0), 4, 4, 3, 4)\n"
        "X = jax.random.normal(jax.random.key(1), (4, 5))\n"
        "tr = fa.trace(fa.attention, X, X, W, fa.unidirectional_mask(5))\n"
        "print(tr.get(4, 5).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(5, 5)", out.stdout


def test_submodules_of_the_old_flat_layout_still_resolve_as_attributes():
    """``fa.trainer``, ``fa.cache``, … (the pre-layout submodules) resolve lazily to their new
    homes, so ``from formal_algorithms import trainer`` keeps working."""
    from formal_algorithms import cache, fast, trainer, training
    from formal_algorithms.practice import cache as new_cache

    assert cache is new_cache
    assert trainer.__name__ == "formal_algorithms.practice.trainer"
    assert fast.__name__ == "formal_algorithms.practice.fast"
    assert training.__name__ == "formal_algorithms.paper.training"


def test_no_module_over_600_lines_and_no_function_over_60():
    """Issue 26's sizes: a module that grows past 600 lines, or a function past 60 (its `def` to
    its last line), is split by what it does."""
    found = []
    for module, (path, _) in MODULES.items():
        source = path.read_text()
        if len(source.splitlines()) > 600:
            found.append(f"{module}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > 60:
                    found.append(f"{module}.{node.name} (line {node.lineno}): {size} lines")
    assert not found, "too long:\n" + "\n".join(found)
