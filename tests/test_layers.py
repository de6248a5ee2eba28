"""The import contract between the layers of the code base, checked on the source.

Imports go one way, from a layer to the layers below it (or within itself)::

    application  (cli, batch, store, recheck, plotting, progress, train, datasets, models,
         ↓         the public facade ``parallelepipedonn/__init__``, the benchmarks)
    methods      (the searches, dual boxes, certify, certificates, inputs)
         ↓
    oracles      (the verifier backends: every module of ``oracles``)
         ↓
    core         (the IR and its ONNX format, boxes, errors, tolerances, threads, small
                  helpers without dependencies)

Every ``import`` and ``from ... import`` statement counts, wherever it is: at module level,
inside a function (a lazy import is still a dependency), and under ``if TYPE_CHECKING:``
(a type annotation that names an upper layer is a dependency of the design too, and it
would make the lower layer's API depend on the upper layer's types). So ``oracles`` may not
import the application, even lazily or for a type.

``from package import name`` depends on ``package.name`` when that is a module, else on the
package itself: ``from parallelepipedonn import Box`` goes through the public facade (an
application module) and is refused in the lower layers; ``from parallelepipedonn.box import
Box`` is the way. Importing a submodule runs its packages' ``__init__`` first, so the
runtime imports of a package's ``__init__`` must stay within the lowest layer of its
modules.

Every module of ``parallelepipedonn``, ``oracles`` and ``benchmarks`` must be in
:data:`LAYERS`: a new module fails this test until it is given its layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("parallelepipedonn", "oracles", "benchmarks")

#: The layers, lowest first; a module may import modules of its own layer or of a lower one.
ORDER = ("core", "oracles", "methods", "application")

#: The specification: each module's layer (packages by their ``__init__``).
LAYERS: dict[str, str] = {
    # core: the IR, what it is made of and read from, and helpers that depend on nothing else
    "parallelepipedonn._lazy": "core",
    "parallelepipedonn._version": "core",
    "parallelepipedonn.box": "core",
    "parallelepipedonn.errors": "core",
    "parallelepipedonn.classifier": "core",  # what both IRs derive from their forward pass
    "parallelepipedonn.graph": "core",  # the DAG IR
    "parallelepipedonn.graph_nodes": "core",  # its typed nodes
    "parallelepipedonn.graph_exact": "core",  # its exact evaluation
    "parallelepipedonn.graph_chain": "core",  # its expansion into a chain Network
    "parallelepipedonn.onnx_graph": "core",  # ONNX to the DAG IR
    "parallelepipedonn.io_utils": "core",
    "parallelepipedonn.network": "core",
    "parallelepipedonn.onnx_export": "core",
    "parallelepipedonn.onnx_import": "core",
    "parallelepipedonn.onnx_read": "core",  # reading and checking ONNX models, for both importers
    "parallelepipedonn.threads": "core",
    "parallelepipedonn.tolerances": "core",
    "parallelepipedonn.vnnlib": "core",  # VNN-LIB properties (pure Python, exact)
    "parallelepipedonn.exact_numbers": "core",  # exact rationals <-> float64 and finite decimals
    "parallelepipedonn.counterexamples": "core",  # a property's counterexamples, decided exactly
    # oracles: the verifier backends, on the IR only
    "oracles": "oracles",
    "oracles._marabou_worker": "oracles",
    "oracles.alpha": "oracles",  # alpha-CROWN with optimised intermediate bounds
    "oracles.attack": "oracles",
    "oracles.bab": "oracles",
    "oracles.bab_domains": "oracles",
    "oracles.bab_graph": "oracles",
    "oracles.base": "oracles",
    "oracles.adam": "oracles",
    "oracles.bounds": "oracles",
    "oracles.forward": "oracles",  # forward-mode intermediate bounds, for few inputs
    "oracles.sparse_weights": "oracles",  # compressed products of mostly-zero weight matrices
    "oracles.network_tensors": "oracles",  # a chain's tensors, built once per network, device, dtype
    "oracles.enclosure": "oracles",  # where a backward pass may end: forward-mode bounds of a layer
    "oracles.rows": "oracles",  # products of coefficient rows with per-box vectors
    "oracles.nesting": "oracles",  # nested boxes: the bisection's order, the superset memory
    "oracles.precision": "oracles",  # sound kernel settings, boxes as tensors rounded outward
    "oracles.monotone": "oracles",  # input-gradient bounds, monotone inputs fixed
    "oracles.capabilities": "oracles",
    "oracles.cascade": "oracles",
    "oracles.chain": "oracles",  # the bridge from graphs to the chain oracles
    "oracles.crown": "oracles",
    "oracles.input_split": "oracles",
    "oracles.distance": "oracles",
    "oracles.gmm": "oracles",  # closed form on linear classifiers, CROWN otherwise
    "oracles.graph_bounds": "oracles",  # CROWN over the DAG IR
    "oracles.graph_backward": "oracles",  # its backward pass and concretisation
    "oracles.graph_windows": "oracles",  # its windowed (patches) intermediate bounds
    "oracles.graph_rounding": "oracles",  # its per-product rounding slacks
    "oracles.lirpa": "oracles",
    "oracles.marabou": "oracles",
    "oracles.milp": "oracles",
    "oracles.milp_encoding": "oracles",
    "oracles.milp_graph": "oracles",  # the MILP encoding of the DAG IR
    "oracles.milp_regions": "oracles",
    "oracles.registry": "oracles",
    # methods: what is computed with the oracles
    "parallelepipedonn.certificate": "methods",
    "parallelepipedonn.certify": "methods",
    "parallelepipedonn.dual": "methods",
    "parallelepipedonn.gmm": "methods",  # latent Gaussian-mixture classifiers
    "parallelepipedonn.gmm.certify": "methods",
    "parallelepipedonn.gmm.diagnostics": "methods",
    "parallelepipedonn.gmm.encoders": "methods",
    "parallelepipedonn.gmm.fit": "methods",
    "parallelepipedonn.gmm.lipschitz": "methods",
    "parallelepipedonn.gmm.mixture": "methods",
    "parallelepipedonn.gmm.model": "methods",
    "parallelepipedonn.gmm.radii": "methods",
    "parallelepipedonn.gmm.linear": "methods",
    "parallelepipedonn.inputs": "methods",
    "parallelepipedonn.property_net": "methods",  # a VNN-LIB region as a robustness query
    "parallelepipedonn.search": "methods",
    "parallelepipedonn.search.apothem": "methods",
    "parallelepipedonn.search.base": "methods",
    "parallelepipedonn.search.box": "methods",
    "parallelepipedonn.search.exact": "methods",
    "parallelepipedonn.search.volume": "methods",
    "parallelepipedonn.verify": "methods",
    # application: commands, batches, storage, plots, training, data, the public facade
    "parallelepipedonn": "application",
    "parallelepipedonn.batch": "application",
    "parallelepipedonn.cli": "application",
    "parallelepipedonn.cli.__main__": "application",
    "parallelepipedonn.cli.args": "application",
    "parallelepipedonn.cli.bench": "application",
    "parallelepipedonn.cli.certify": "application",
    "parallelepipedonn.cli.common": "application",
    "parallelepipedonn.cli.compare": "application",
    "parallelepipedonn.cli.dual": "application",
    "parallelepipedonn.cli.gmm": "application",
    "parallelepipedonn.cli.exits": "application",
    "parallelepipedonn.cli.info": "application",
    "parallelepipedonn.cli.listing": "application",
    "parallelepipedonn.cli.parser": "application",
    "parallelepipedonn.cli.recheck": "application",
    "parallelepipedonn.cli.store": "application",
    "parallelepipedonn.cli.train": "application",
    "parallelepipedonn.cli.verify": "application",
    "parallelepipedonn.datasets": "application",
    "parallelepipedonn.instances": "application",  # VNN-COMP instances into the results store
    "parallelepipedonn.executors": "application",  # batch executors, by name
    "parallelepipedonn.executors.base": "application",
    "parallelepipedonn.executors.local": "application",
    "parallelepipedonn.executors.ray_cluster": "application",
    "parallelepipedonn.models": "application",
    "parallelepipedonn.plotting": "application",
    "parallelepipedonn.progress": "application",
    "parallelepipedonn.recheck": "application",
    "parallelepipedonn.recheck_claims": "application",  # the claims of a stored result, checked
    "parallelepipedonn.verify_recheck": "application",  # the claims of a stored verification, checked
    "parallelepipedonn.store": "application",
    "parallelepipedonn.train": "application",
    "benchmarks": "application",
    "benchmarks.common": "application",
    "benchmarks.crown_vs_lirpa": "application",
    "benchmarks.graph_complete": "application",
    "benchmarks.graph_crown_cifar": "application",
    "benchmarks.dual_boxes": "application",
    "benchmarks.exact_apothem": "application",
    "benchmarks.epsilon_agreement": "application",
    "benchmarks.gmm": "application",
    "benchmarks.acasxu": "application",
    "benchmarks.executors": "application",
    "benchmarks.options": "application",
    "benchmarks.oracle_throughput": "application",
    "benchmarks.paper": "application",
    "benchmarks.paper_report": "application",  # bench paper: tables and figures
    "benchmarks.paper_runs": "application",  # bench paper: the experiments
    "benchmarks.readme": "application",
    "benchmarks.responsiveness": "application",
    "benchmarks.search_algorithms": "application",
    "benchmarks.vnncomp": "application",
    "benchmarks.vnncomp_published": "application",
}

#: Modules named in :data:`LAYERS` before they exist (work under way elsewhere).
PLANNED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    """One import statement's dependency of ``module`` on ``target`` (line ``line``)."""

    module: str
    target: str
    line: int
    statement: str
    runtime: bool  # executed when the module is imported (module level, not under TYPE_CHECKING)

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}: {self.statement!r}) imports {self.target}"


def _module_files() -> dict[str, Path]:
    """Every module of the checked packages, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, with whether it runs when the module is imported."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, runtime))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, runtime and not lazy)

    visit(tree, True)
    return found


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules (or packages) of the checked packages that one statement depends on."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES | LAYERS else base
                 for alias in node.names]
    return sorted({n for n in names if n.split(".")[0] in PACKAGES})


def _owner(target: str) -> str:
    """The module of the map that ``target`` names (``a.b.c`` → ``a.b`` if ``a.b.c`` is no module)."""
    while target not in LAYERS and "." in target:
        target = target.rpartition(".")[0]
    return target


def _imports() -> list[Import]:
    out = []
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        for node, runtime in _statements(ast.parse(source, str(path))):
            statement = ast.get_source_segment(source, node) or ast.dump(node)
            for target in _resolve(module, node):
                out.append(Import(module, _owner(target), node.lineno, " ".join(statement.split()), runtime))
    return out


IMPORTS = _imports()


def _rank(module: str) -> int:
    return ORDER.index(LAYERS[module])


def _violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if imp.target not in LAYERS:
            bad.append(f"{imp}: a module that is not in the layer map")
        elif imp.module in LAYERS and _rank(imp.target) > _rank(imp.module):
            bad.append(f"{imp}: {LAYERS[imp.module]} may not import {LAYERS[imp.target]}")
    return bad


def test_every_module_has_a_layer():
    assert set(LAYERS.values()) <= set(ORDER)
    missing = sorted(set(MODULES) - set(LAYERS))
    assert not missing, f"modules without a layer (add them to LAYERS in {__file__}): {', '.join(missing)}"
    stale = sorted(set(LAYERS) - set(MODULES) - PLANNED)
    assert not stale, f"LAYERS names modules that do not exist: {', '.join(stale)}"


def test_imports_go_down_the_layers():
    bad = _violations(IMPORTS)
    assert not bad, "imports against the layers:\n  " + "\n  ".join(bad)


def test_core_imports_neither_oracles_nor_upper_modules():
    bad = [str(i) for i in IMPORTS if LAYERS.get(i.module) == "core" and LAYERS.get(i.target) != "core"]
    assert not bad, "core modules may import only core modules:\n  " + "\n  ".join(bad)


def test_oracles_import_only_core_modules_of_parallelepipedonn():
    bad = [str(i) for i in IMPORTS if i.module.split(".")[0] == "oracles" and i.target.split(".")[0] != "oracles"
           and LAYERS.get(i.target) != "core"]
    assert not bad, "oracles may import only the core of parallelepipedonn:\n  " + "\n  ".join(bad)


def test_package_inits_run_only_imports_of_their_lowest_layer():
    """Importing ``parallelepipedonn.box`` runs ``parallelepipedonn/__init__`` first: what that
    imports at run time is imported by every core module."""
    bad = []
    for package in (m for m, p in MODULES.items() if p.name == "__init__.py"):
        floor = min(_rank(m) for m in MODULES if m.startswith(f"{package}.") or m == package)
        bad += [f"{i}: the package's lowest layer is {ORDER[floor]}" for i in IMPORTS
                if i.module == package and i.runtime and i.target in LAYERS and _rank(i.target) > floor]
    assert not bad, "\n  ".join(bad)


@pytest.mark.parametrize("source, message", [
    ("from parallelepipedonn.certify import certify\n", "oracles may not import methods"),
    ("def f():\n    from parallelepipedonn import cli\n", "oracles may not import application"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from parallelepipedonn.store import ResultStore\n",
     "oracles may not import application"),
    ("from parallelepipedonn import Box\n", "oracles may not import application"),  # through the facade
    ("from parallelepipedonn.box import Box\nfrom . import base\nimport numpy\n", None),
])
def test_the_check_names_the_module_the_line_and_the_import(source, message):
    module = "oracles.crown"
    imports = [Import(module, _owner(t), node.lineno, ast.unparse(node), runtime)
               for node, runtime in _statements(ast.parse(source)) for t in _resolve(module, node)]
    bad = _violations(imports)
    if message is None:
        assert not bad
    else:
        assert len(bad) == 1 and message in bad[0] and bad[0].startswith("oracles.crown (line ")


def test_importing_the_oracles_loads_only_the_core_of_parallelepipedonn():
    """The same contract at run time: every oracle module, imported in a fresh interpreter."""
    oracle_modules = sorted(m for m in MODULES if m.split(".")[0] == "oracles" and m != "oracles._marabou_worker")
    code = ("import importlib, sys\n"
            f"for m in {oracle_modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'parallelepipedonn'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip().splitlines()[-1])
    upper = [m for m in loaded if m != "parallelepipedonn" and LAYERS.get(m) != "core"]
    assert not upper, f"importing the oracles loaded {upper}"


#: Module-level numbers whose names say tolerance, outside ``parallelepipedonn/tolerances.py``,
#: with why they are not soundness tolerances (no proof reads them).
NOT_SOUNDNESS = {
    "oracles.crown.SCREEN_SLACK": "which corners the screen evaluates in float64 (a heuristic filter)",
    "parallelepipedonn.plotting._TIGHT_RTOL": "which faces a picture colours as binding",
    "oracles.milp_regions.INTERIOR_MARGINS": "where the solver looks for a witness, which a forward pass then confirms",
    "parallelepipedonn.onnx_read.BN_EPSILON": "ONNX's BatchNormalization default epsilon: the operator's semantics",
}
TOLERANCE_WORDS = ("SLACK", "MARGIN", "RTOL", "ATOL", "TOLERANCE", "EPS")


def test_soundness_tolerances_live_in_the_tolerances_module():
    """Every number that widens or narrows what counts as proven (slacks, margins, relative
    tolerances) is defined in ``parallelepipedonn/tolerances.py``, where it is reviewed with
    the others; elsewhere, a module-level number named like one is a listed exception."""
    found = []
    for name, path in MODULES.items():
        if name == "parallelepipedonn.tolerances" or not name.startswith(("parallelepipedonn", "oracles")):
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
            value = getattr(node, "value", None)
            # a number: a literal, an expression of them, a call (float(...), np.finfo(...)...), a tuple of them
            literal = isinstance(value, ast.Constant) and isinstance(value.value, (int, float)) or \
                isinstance(value, (ast.BinOp, ast.UnaryOp, ast.Call, ast.Tuple))
            for target in targets:
                if isinstance(target, ast.Name) and literal and any(w in target.id.upper() for w in TOLERANCE_WORDS):
                    found.append(f"{name}.{target.id}")
    stray = sorted(set(found) - set(NOT_SOUNDNESS))
    assert not stray, f"tolerances outside parallelepipedonn/tolerances.py: {', '.join(stray)}"
    stale = sorted(set(NOT_SOUNDNESS) - set(found))
    assert not stale, f"NOT_SOUNDNESS names numbers that no longer exist: {', '.join(stale)}"
