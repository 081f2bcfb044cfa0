"""The package's shape, as docs/architecture.md draws it, checked on the source (AST, no import).

* the import graph of ``cfn_fast`` has no cycle, counting imports inside functions and under
  ``TYPE_CHECKING`` (an edge goes to the module named, or to the submodule when the imported name is one);
* the core never imports the tools built on it (``cfn_fast.tools``) nor the command line (``cfn_fast.cli``);
* no module imports an underscore-prefixed name of another module, reads another object's underscore
  attributes, or touches another object's ``__dict__``;
* no package file is over 600 lines, the estimator's module at most 450, at most 12 modules at the root.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from children import TESTS, child_env  # tests/children.py

import cfn_fast

PACKAGE = Path(cfn_fast.__file__).resolve().parent
NAME = "cfn_fast"

#: Layers from the bottom up: a module may import from its own layer and from those below it only.
#: The core is everything not listed in a later layer.
TOOLS = f"{NAME}.tools"
CLI = f"{NAME}.cli"

#: Reads of a third-party object's underscore attributes, each with a comment saying why (the word
#: "private" on its line or the one above).  Today: argparse._CountAction in cli/common.py.
THIRD_PARTY_PRIVATE_READS_ALLOWED = 3


def _modules() -> dict[str, Path]:
    found = {}
    paths = [Path(root) / f for root, _, files in os.walk(PACKAGE, followlinks=True)   # cfn_fast/kernels is a link
             for f in files if f.endswith(".py")]
    for path in sorted(paths):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((NAME, *parts))] = path
    return found


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(module: str) -> list[tuple[str, str, int]]:
    """``(imported module, imported name or '', line)`` for every import of a cfn_fast module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, "", node.lineno) for alias in node.names if alias.name.startswith(NAME))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = _resolve(module, node.level, node.module)
            if not base.startswith(NAME):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, "", node.lineno) if sub in MODULES else (base, alias.name, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in _imports(module):
            while target not in MODULES and "." in target:  # a name inside a module, e.g. a class
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def _layer(module: str) -> int:
    if module == CLI or module.startswith(CLI + "."):
        return 2
    if module == TOOLS or module.startswith(TOOLS + "."):
        return 1
    return 0


def test_the_core_never_imports_the_tools_nor_the_cli():
    upward = [f"{m} -> {t}" for m, targets in _graph().items() for t in targets
              if _layer(t) > _layer(m) and m != NAME]
    assert not upward, "\n".join(upward)


def test_no_module_imports_another_modules_private_names():
    private = [f"{MODULES[m].relative_to(PACKAGE)}:{line} {name or target}"
               for m in MODULES for target, name, line in _imports(m)
               if (name or target.rsplit(".", 1)[-1]).startswith("_")
               and not (name or target.rsplit(".", 1)[-1]).startswith("__")]
    assert not private, "\n".join(private)


def _made_by_own_class(func: ast.AST) -> set[str]:
    """Local names bound to a new instance of the class the code sits in (``model = cls(...)``)."""
    return {target.id for node in ast.walk(func) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "cls" for target in node.targets if isinstance(target, ast.Name)}


def _is_own(value: ast.AST, own: set[str]) -> bool:
    """``self``, ``cls``, an instance the class just made, or ``super()``."""
    if isinstance(value, ast.Name):
        return value.id in own
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


class _ForeignReads(ast.NodeVisitor):
    """Reads of an underscore attribute, and uses of ``__dict__`` / ``vars()``, on anything but the object's
    own class: another object (``engine._state``), a chain (``self.bias_._predict``), another module."""

    def __init__(self) -> None:
        self.own = [{"self", "cls"}]
        self.underscore: list[tuple[int, str]] = []   # (line, the expression)
        self.dicts: list[tuple[int, str]] = []

    @staticmethod
    def _where(node: ast.expr) -> tuple[int, str]:
        return node.lineno, ast.unparse(node)[:60]

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.own.append(self.own[-1] | _made_by_own_class(node))
        self.generic_visit(node)
        self.own.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "vars" \
                and not all(_is_own(arg, self.own[-1]) for arg in node.args):
            self.dicts.append(self._where(node))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not _is_own(node.value, self.own[-1]):
            if node.attr == "__dict__":
                self.dicts.append(self._where(node))
            elif node.attr.startswith("_") and not node.attr.startswith("__"):
                self.underscore.append(self._where(node))
        self.generic_visit(node)


def _foreign_reads() -> tuple[list[str], list[str]]:
    underscore, dicts = [], []
    for path in MODULES.values():
        source = path.read_text(encoding="utf-8")
        reads = _ForeignReads()
        reads.visit(ast.parse(source))
        lines = source.splitlines()
        label = path.relative_to(PACKAGE)
        for line, text in reads.underscore:   # each must say why, on its line or the one above
            said = "private" in " ".join(lines[max(0, line - 2):line]).lower()
            underscore.append(f"{label}:{line} {text}" + ("" if said else "  (no comment saying why)"))
        dicts += [f"{label}:{line} {text}" for line, text in reads.dicts]
    return underscore, dicts


def test_no_module_reads_other_objects_private_attributes_or_dict():
    underscore, dicts = _foreign_reads()
    assert not dicts, "\n".join(dicts)
    assert len(underscore) <= THIRD_PARTY_PRIVATE_READS_ALLOWED, "\n".join(underscore)
    assert not [where for where in underscore if where.endswith("(no comment saying why)")], "\n".join(underscore)


def test_the_private_read_check_sees_other_objects_chains_and_dicts():
    source = """
class A:
    def own(self, other):
        self._x, super()._y
        made = cls()
        made._z
        other._state
        self.engine_._kernels
        vars(other), other.__dict__, vars(self)
"""
    reads = _ForeignReads()
    reads.visit(ast.parse(source))
    assert [text for _, text in reads.underscore] == ["other._state", "self.engine_._kernels"]
    assert [text for _, text in reads.dicts] == ["vars(other)", "other.__dict__"]


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_package_file_is_over_600_lines(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 600, f"{path.name} has {lines} lines"


def test_the_estimator_module_is_thin_and_the_root_small():
    estimator = [p for p in MODULES.values() if "class CFN(" in p.read_text(encoding="utf-8")]
    assert len(estimator) == 1
    lines = estimator[0].read_text(encoding="utf-8").count("\n")
    assert lines <= 450, f"{estimator[0].name} has {lines} lines"
    root = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(root) <= 12, sorted(p.name for p in root)


def test_the_layers_of_docs_architecture_hold():
    """The ``[tool.importlinter]`` contract of pyproject.toml (the diagram of docs/architecture.md)."""
    pytest.importorskip("importlinter")
    config = Path(__file__).resolve().parents[1] / "pyproject.toml"   # the checkout's, beside tests/
    command = Path(sys.executable).parent / "lint-imports"
    if not config.is_file() or not command.exists():
        pytest.skip("needs the checkout's pyproject.toml and the lint-imports command")
    # From tests/ with the package under test first on the path: the installed wheel, or the source tree
    result = subprocess.run([str(command), "--config", str(config), "--no-cache"],
                            capture_output=True, text=True, cwd=TESTS, env=child_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
