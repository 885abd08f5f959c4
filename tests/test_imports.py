"""Imports run one way: no circle among the project's own modules, and each part of the code imports only the
parts that the README's code map allows (its table "| part | what it holds | may import |").

The modules are read with ``ast``, never imported (no torch, a fraction of a second): every ``import`` and
``from ... import`` statement, at module level and inside functions alike, since an import hidden in a
function still makes a circle, only a later one. Relative imports are resolved against the importing
package. ``bench/`` and ``tests/`` are folders of scripts, not packages: each puts its own folder (and
``bench/soak.py`` the tests' folder) on ``sys.path``, so a bare name there is looked up in those folders too.
Imports made by name at run time (``importlib.import_module``) are not seen.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MAP_HEADER = re.compile(r"^\|\s*part\s*\|\s*what it holds\s*\|\s*may import\s*\|\s*$", re.M)
EVERYTHING = "*"


@dataclass(frozen=True)
class Import:
    """One resolved import: ``importer`` imports ``imported`` at ``line`` of ``path``."""
    importer: str
    imported: str
    path: str
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, script_folders: tuple[str, ...]) -> dict[str, Path]:
    """Every module of the project by its dotted name: the top-level ``*.py`` files, every file of a top-level
    package (a folder with ``__init__.py``), and every file of the script folders named."""
    modules = {}
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix == ".py":
            modules[entry.stem] = entry
        elif entry.is_dir() and ((entry / "__init__.py").is_file() or entry.name in script_folders):
            for path in sorted(entry.rglob("*.py")):
                if "__pycache__" not in path.parts:
                    modules[module_name(path, root)] = path
    return modules


def _longest_known(dotted: str, modules: dict[str, Path], prefix: str = "") -> str | None:
    """The longest leading part of ``dotted`` that names a module (``a.b.c`` -> ``a.b`` if ``a.b`` is one)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = prefix + ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def resolve(dotted: str, importer: str, modules: dict[str, Path], script_folders: tuple[str, ...]) -> str | None:
    """The project module an absolute import of ``dotted`` by ``importer`` loads; None for anything else
    (the standard library, installed packages)."""
    found = _longest_known(dotted, modules)
    folder = importer.split(".")[0]
    if found is None and folder in script_folders:
        for other in (folder, *[name for name in script_folders if name != folder]):
            found = _longest_known(dotted, modules, prefix=other + ".")
            if found:
                break
    return found


def imports_of(name: str, path: Path, root: Path, modules: dict[str, Path],
               script_folders: tuple[str, ...]) -> list[Import]:
    """The project modules that the module ``name`` (file ``path``) imports, wherever the statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [resolve(alias.name, name, modules, script_folders) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x, from ..pkg import y: relative to the importing package
                if node.level - 1 > len(package):
                    raise ValueError(f"{path}:{node.lineno}: a relative import above the top of the project")
                base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [_from_import(base, alias.name, bool(node.level), name, modules, script_folders)
                       for alias in node.names]
        else:
            continue
        found += [Import(name, target, path.relative_to(root).as_posix(), node.lineno)
                  for target in dict.fromkeys(targets) if target and target != name]
    return found


def _from_import(base: str, member: str, relative: bool, importer: str, modules: dict[str, Path],
                 script_folders: tuple[str, ...]) -> str | None:
    """What ``from base import member`` loads: the submodule ``base.member`` where there is one, else ``base``
    (the package's own names)."""
    def find(dotted: str) -> str | None:
        return _longest_known(dotted, modules) if relative else resolve(dotted, importer, modules, script_folders)

    package = find(base) if base else None
    submodule = find(f"{base}.{member}" if base else member)
    return submodule if submodule and submodule != package else package


def import_graph(root: Path, script_folders: tuple[str, ...]) -> list[Import]:
    """Every import among the project's own modules under ``root``."""
    modules = project_modules(root, script_folders)
    return [edge for name, path in modules.items()
            for edge in imports_of(name, path, root, modules, script_folders)]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as its modules in order, the first repeated at the end; None when there is none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for successor in sorted(edges.get(node, ())):
            if state.get(successor) == "open":
                return path[path.index(successor):] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def part_of(module: str) -> str:
    return module.split(".")[0]


def _names(cell: str) -> list[str]:
    """The parts and modules written in backticks in a cell, as dotted names: `serve/` -> serve,
    `tests/upload_corpus.py` -> tests.upload_corpus."""
    return [re.sub(r"\.py$", "", token.strip().rstrip("/")).replace("/", ".")
            for token in re.findall(r"`([^`]+)`", cell)]


def read_code_map(text: str) -> dict[str, set[str]]:
    """The code map's table: each part (its first cell) and what it may import (its third cell: the parts or
    modules in backticks; "anything" without any, every part)."""
    header = MAP_HEADER.search(text)
    if header is None:
        raise ValueError("no code map: a table with the header '| part | what it holds | may import |'")
    allowed = {}
    for line in text[header.end():].lstrip("\n").splitlines()[1:]:  # the separator row, then the parts
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3:
            raise ValueError(f"code map row without three cells: {line!r}")
        parts, may_import = _names(cells[0]), _names(cells[2])
        if not may_import and "anything" in cells[2]:
            may_import = [EVERYTHING]
        for part in parts:
            allowed[part] = set(may_import)
    if not allowed:
        raise ValueError("the code map's table has no rows")
    return allowed


def is_allowed(imported: str, allowances: set[str]) -> bool:
    return EVERYTHING in allowances or any(imported == allowed or imported.startswith(allowed + ".")
                                           or part_of(imported) == allowed for allowed in allowances)


def layer_violations(edges: list[Import], allowed: dict[str, set[str]]) -> list[str]:
    """Each import from one part into another that the map does not allow, in words with its place."""
    problems = []
    for edge in edges:
        source, target = part_of(edge.importer), part_of(edge.imported)
        if source == target:
            continue
        if source not in allowed:
            problems.append(f"{edge.importer} is in {source}, which the code map does not list")
        elif not is_allowed(edge.imported, allowed[source]):
            problems.append(f"{edge.path}:{edge.line}: {edge.importer} imports {edge.imported}, "
                            f"which the code map does not let {source} import")
    return problems


def as_graph(edges: list[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
    return graph


# -- the project --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def code_map() -> dict[str, set[str]]:
    return read_code_map((REPO_ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def script_folders(code_map) -> tuple[str, ...]:
    """The parts of the map that are folders without ``__init__.py``: bench/ and tests/."""
    return tuple(sorted(part for part in code_map
                        if (REPO_ROOT / part).is_dir() and not (REPO_ROOT / part / "__init__.py").is_file()))


@pytest.fixture(scope="module")
def project_imports(script_folders) -> list[Import]:
    return import_graph(REPO_ROOT, script_folders)


def test_the_project_has_no_import_circle(project_imports):
    cycle = find_cycle(as_graph(project_imports))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_part_of_the_code_is_on_the_code_map(code_map, script_folders):
    parts = {part_of(name) for name in project_modules(REPO_ROOT, script_folders)}
    assert parts - set(code_map) == set(), "add these to the README's code map"
    assert set(code_map) - parts == set(), "the README's code map lists parts that do not exist"


def test_each_part_imports_only_what_the_code_map_allows(project_imports, code_map):
    assert len(project_imports) > 100  # the graph was read: app, serve, tools... import one another
    assert layer_violations(project_imports, code_map) == []


# -- the checker can fail ------------------------------------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_circle_hidden_inside_a_function_is_found(tmp_path):
    """The circle that explain/ once had: cam -> perturbation -> faithfulness -> cam, the middle import
    inside a function so that it runs; relative and absolute spellings, and a package's own names."""
    _write(tmp_path, {
        "explain/__init__.py": "from .cam import cam\n",
        "explain/cam.py": "from explain import perturbation\n\ndef cam():\n    return perturbation\n",
        "explain/perturbation.py": "def attribute():\n    from . import faithfulness\n    return faithfulness\n",
        "explain/faithfulness.py": "import os\nfrom explain.cam import cam\n",
        "serve/__init__.py": "", "serve/store.py": "import torch\nfrom explain import cam, overlay\n",
    })
    edges = import_graph(tmp_path, ())
    assert {(edge.importer, edge.imported) for edge in edges} == {
        ("explain", "explain.cam"), ("explain.cam", "explain.perturbation"),
        ("explain.perturbation", "explain.faithfulness"), ("explain.faithfulness", "explain.cam"),
        ("serve.store", "explain.cam"), ("serve.store", "explain")}  # a submodule, and the package's own name
    assert find_cycle(as_graph(edges)) == ["explain.cam", "explain.perturbation", "explain.faithfulness",
                                            "explain.cam"]
    # Without the function-level import there is no circle.
    _write(tmp_path, {"explain/perturbation.py": "def attribute():\n    return None\n"})
    assert find_cycle(as_graph(import_graph(tmp_path, ()))) is None


def test_find_cycle_on_small_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c", "d"}, "d": {"b"}}) == ["b", "d", "b"]


def test_an_import_against_the_map_is_reported(tmp_path):
    _write(tmp_path, {
        "explain/__init__.py": "", "explain/cam.py": "def cam():\n    import serve.store\n",
        "serve/__init__.py": "", "serve/store.py": "from explain.cam import cam\n",
        "bench/timing.py": "", "bench/soak.py": "import timing\nfrom upload_corpus import write_corpus\n",
        "tests/upload_corpus.py": "", "tests/conftest.py": "", "tests/test_x.py": "from conftest import x\n",
    })
    allowed = read_code_map("| part | what it holds | may import |\n|---|---|---|\n"
                            "| `explain/` | maps | nothing of the project |\n"
                            "| `serve/` | the app's work | `explain` |\n"
                            "| `bench/` | benchmarks | `serve`, `tests/upload_corpus.py` |\n"
                            "| `tests/` | pytest | anything |\n")
    assert allowed == {"explain": set(), "serve": {"explain"}, "bench": {"serve", "tests.upload_corpus"},
                       "tests": {EVERYTHING}}
    edges = import_graph(tmp_path, ("bench", "tests"))
    assert {(edge.importer, edge.imported) for edge in edges} >= {
        ("bench.soak", "bench.timing"), ("bench.soak", "tests.upload_corpus"), ("tests.test_x", "tests.conftest")}
    problems = layer_violations(edges, allowed)
    assert len(problems) == 1 and "explain.cam imports serve.store" in problems[0], problems
    assert problems[0].startswith("explain/cam.py:2: ")
    # The bench may use the upload corpus, not the rest of tests/.
    assert layer_violations([Import("bench.soak", "tests.conftest", "bench/soak.py", 1)], allowed)
    with pytest.raises(ValueError, match="no code map"):
        read_code_map("# a README without its map\n")
