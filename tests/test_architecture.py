"""ARCHITECTURE.md is the layer table, as data: every module of gapan/ and reports/ sits in one
layer, imports only from its own layer and those above it, and the libraries whose upgrades must
touch few files are imported only where the document says. The imports are read with `ast`,
without importing anything."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("gapan", "reports")


def fenced_block(kind: str) -> list[list[str]]:
    """The rows of ARCHITECTURE.md's ```<kind> block, split into words."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    match = re.search(rf"```{kind}\n(.*?)```", text, re.DOTALL)
    assert match, f"ARCHITECTURE.md has no ```{kind} block"
    return [line.split() for line in match.group(1).splitlines() if line.strip()]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def owner(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that `name` (a module, or a name inside one) is, or None."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(tree: ast.Module, module_level: bool) -> Iterator[str]:
    """Every name imported (``a.b`` for ``import a.b`` and for ``from a import b``); with
    `module_level`, only those run at import time, not inside functions or behind
    ``if TYPE_CHECKING``."""

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            yield node
            if module_level:
                if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                    yield from walk(node.body + node.orelse)
                elif isinstance(node, ast.Try):
                    yield from walk(node.body + node.orelse + node.finalbody)

    nodes = walk(tree.body) if module_level else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from a import b`: the module a.b where there is one, else module a (`owner`).
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def edges(module_level: bool = False) -> set[tuple[str, str]]:
    """(importer, imported) between our modules, and (importer, library) for the rest."""
    known = modules()
    found = set()
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target in imports(tree, module_level):
            ours = owner(target, known) if target.split(".")[0] in PACKAGES else None
            if ours is None and target.split(".")[0] in PACKAGES:
                continue
            found.add((name, ours or target.split(".")[0]))
    return {(a, b) for a, b in found if a != b}


def layer_of() -> dict[str, int]:
    """Each module's layer, by its position in the ```layers block."""
    rows = fenced_block("layers")
    places = [(rank, place) for rank, (_, *places) in enumerate(rows) for place in places]
    layers = {}
    for name, path in modules().items():
        relative = path.relative_to(ROOT).as_posix()
        matches = [
            rank
            for rank, place in places
            if relative == place or (place.endswith("/") and relative.startswith(place))
        ]
        assert len(matches) == 1, f"{relative} is in {len(matches)} layers of ARCHITECTURE.md"
        layers[name] = matches[0]
    return layers


def allowed_exceptions() -> set[tuple[str, str]]:
    return {(row[0], row[2]) for row in fenced_block("exceptions") if row[1] == "->"}


def layer_violations(found: set[tuple[str, str]]) -> list[str]:
    layers = layer_of()
    exceptions = allowed_exceptions()
    return sorted(
        f"{importer} -> {imported}"
        for importer, imported in found
        if imported in layers
        and layers[imported] > layers[importer]
        and (importer, imported.split(".")[0]) not in exceptions
        and (importer, imported) not in exceptions
    )


def library_violations(found: set[tuple[str, str]]) -> list[str]:
    rules = {library: places for library, *places in fenced_block("libraries")}
    known = modules()
    wrong = []
    for importer, library in found:
        if library not in rules:
            continue
        path = known[importer].relative_to(ROOT).as_posix()
        if not any(path == place or path.startswith(place) for place in rules[library]):
            wrong.append(f"{importer} imports {library}")
    return sorted(wrong)


def test_every_module_sits_in_one_layer_and_imports_only_from_its_own_or_those_above():
    assert layer_violations(edges()) == []


def test_the_libraries_are_imported_only_where_the_document_says():
    assert library_violations(edges()) == []


def test_no_two_modules_import_each_other_at_import_time():
    graph: dict[str, set[str]] = {}
    for importer, imported in edges(module_level=True):
        if imported in modules():
            graph.setdefault(importer, set()).add(imported)
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []


@pytest.mark.parametrize(
    ("edge", "problem"),
    [
        (("gapan.config", "gapan.tune.runner"), "gapan.config -> gapan.tune.runner"),
        (("reports.build", "ray"), "reports.build imports ray"),
    ],
)
def test_a_forbidden_edge_is_found(edge, problem):
    found = edges() | {edge}
    assert problem in layer_violations(found) + library_violations(found)
