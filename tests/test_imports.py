"""analysis/ and the notebooks read the catalogue without torch, Ray or the trainers, so a machine
without a GPU stack can redraw figures and judge claims."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter where importing any of `blocked` (or a submodule) raises
    ModuleNotFoundError, as on a machine without them. A finder does it rather than None entries in
    sys.modules: libraries probe sys.modules for optional packages (scipy.stats looks for torch there)
    and would take such an entry for the package."""
    finder = ("class Blocker:\n"
              f"    def find_spec(self, name, path=None, target=None):\n"
              f"        if name in {blocked!r} or name.startswith(tuple(b + '.' for b in {blocked!r})):\n"
              "            raise ModuleNotFoundError(f'blocked: {name}', name=name)\n"
              "sys.meta_path.insert(0, Blocker())\n")
    return subprocess.run([sys.executable, "-c", f"import sys\n{finder}{code}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_analysis_imports_without_torch_or_the_runner():
    result = run_blocked(("torch", "ray", "trainers", "study.trials", "study.run"),
                         "import analysis.report, analysis.figures, analysis.claims, analysis.tables, "
                         "analysis.sequential, analysis.diagnostics; assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_catalogue_and_file_writer_are_standard_library_only():
    result = run_blocked(("torch", "pandas", "numpy", "ray", "trainers"),
                         "from study.files import replace_file\nfrom study.cli import OneLineParser\n"
                         "from catalogue import CLAIMS, STUDIES; print(STUDIES['methods'].figure)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "table1"


def imports_of_each_module() -> dict[str, set[str]]:
    """Every project module (dotted name) -> the dotted names it imports anywhere in its code, function
    bodies included; imports for type checkers only (`if TYPE_CHECKING:`) never run and are left out."""
    import ast

    class Imports(ast.NodeVisitor):
        def __init__(self):
            self.found = set()

        def visit_If(self, node):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node):
            self.found |= {alias.name for alias in node.names}

        def visit_ImportFrom(self, node):
            if node.module and node.level == 0:
                self.found.add(node.module)

    graph = {}
    for package in ("catalogue", "trainers", "study", "analysis"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            visitor = Imports()
            visitor.visit(ast.parse(path.read_text()))
            graph[name] = visitor.found
    return graph


def test_layers_point_one_way():
    graph = imports_of_each_module()
    for module, imported in graph.items():
        tops = {name.split(".")[0] for name in imported}
        if module.startswith("catalogue"):  # plain data that every layer above reads
            assert not tops & {"torch", "ray", "trainers", "study", "analysis"}, (module, imported)
        if module.startswith("trainers"):
            assert not tops & {"ray", "catalogue", "study", "analysis"}, (module, imported)
        if module.startswith("study"):
            assert "analysis" not in tops, (module, imported)
        if module.startswith("analysis"):
            assert not tops & {"torch", "ray", "trainers"}, (module, imported)
            # Of study/, only its standard-library modules: the file writer and the parser.
            assert {name for name in imported if name.startswith("study")} <= {"study.files", "study.cli"}, \
                (module, imported)


def test_study_groups_point_one_way():
    """study.measure holds commands: nothing else in study/ imports them (study.benchmark is only the
    benchmark's short command name). study.safety sits below the runner and the measurements, and above
    the output folder's layout."""
    graph = imports_of_each_module()
    for module, imported in graph.items():
        if module.startswith("study") and not module.startswith("study.measure") and module != "study.benchmark":
            assert not any(name.startswith("study.measure") for name in imported), (module, imported)
        if module.startswith("study.safety"):
            assert not {"study.run", "study.submit", "study.rounds"} & imported, (module, imported)
        if module in ("study.outputs", "study.files", "study.trials", "study.profiles"):
            assert not any(name.startswith("study.safety") for name in imported), (module, imported)


def test_no_import_cycles():
    graph = imports_of_each_module()
    edges = {module: {name for name in imported if name in graph} for module, imported in graph.items()}
    visiting, done = set(), set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in visiting, " -> ".join([*path, module])
        if module in done:
            return
        visiting.add(module)
        for target in edges[module]:
            visit(target, [*path, module])
        visiting.discard(module)
        done.add(module)

    for module in edges:
        visit(module, [])


def test_every_console_script_names_a_main_function():
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
