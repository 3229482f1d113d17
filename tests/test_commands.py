"""Every command's --help names the command a user types and describes it in whole sentences."""

import ast
import contextlib
import importlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALIASES = {"study.benchmark": "study.measure.benchmark"}  # a short name that runs another module's main


def command_modules() -> list[str]:
    """Modules that run as `python -m MODULE`: a top-level main() and an `if __name__ == "__main__"` block."""
    found = []
    for package in ("study", "analysis", "trainers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            runs_as_main = any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)
            if runs_as_main:
                found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def test_the_commands_are_found():
    modules = command_modules()
    assert {"study.run", "study.measure.benchmark", "analysis.report", "trainers.fit"} <= set(modules), modules


@pytest.mark.parametrize("module", command_modules())
def test_help_names_the_command_and_ends_its_description_in_a_full_sentence(module):
    main = importlib.import_module(module).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        assert main(["--help"]) in (0, None)
    text = out.getvalue()
    assert text.startswith(f"usage: python -m {ALIASES.get(module, module)} "), text[:200]
    description = text.split("\n\n")[1].strip()  # argparse: usage, blank line, description
    assert description.endswith((".", ".)", ":", "?")), description
