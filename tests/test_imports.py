"""analysis/ and the notebooks read the catalogue without torch, Ray or the trainers, so a machine
without a GPU stack can redraw figures and judge claims."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter where importing any of `blocked` raises ImportError."""
    block = "".join(f"sys.modules[{name!r}] = None; " for name in blocked)
    return subprocess.run([sys.executable, "-c", f"import sys; {block}{code}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_analysis_imports_without_torch_or_the_runner():
    result = run_blocked(("torch", "ray", "trainers", "study.specs", "study.run"),
                         "import analysis.report, analysis.figures, analysis.claims, analysis.tables")
    assert result.returncode == 0, result.stderr


def test_catalogue_is_standard_library_only():
    result = run_blocked(("torch", "pandas", "numpy", "ray", "trainers"),
                         "from study.catalogue import CLAIMS, STUDIES; print(STUDIES['methods'].figure)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "table1"
