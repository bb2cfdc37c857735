"""The house rules: the core stays Qt-free (an import-linter contract and a direct check in a fresh process), the
layers follow the data flow (import-linter layers contracts), and nothing is too big to hold in view."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken" in result.stdout


def test_core_modules_load_without_qt() -> None:
    """Importing every console module must not pull PySide6, shiboken6 or pyqtgraph into the process."""
    code = (
        "import importlib, pkgutil, sys, console\n"
        "for m in pkgutil.walk_packages(console.__path__, 'console.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph', 'widgets'))\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_ruff_finds_nothing() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 350
MAX_CORE_ROOT_MODULES = 6
MAX_GUI_ROOT_MODULES = 8


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_module_or_class_is_too_big_to_hold_in_view() -> None:
    too_big = []
    for path in [*_modules("console"), *_modules("widgets")]:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    too_big.append(f"{name}: class {node.name} {length} lines")
    assert not too_big, too_big


def test_the_roots_keep_few_loose_modules() -> None:
    core = [p.name for p in (ROOT / "console").glob("*.py")]
    gui = [p.name for p in (ROOT / "widgets").glob("*.py")]
    assert len(core) <= MAX_CORE_ROOT_MODULES, core
    assert len(gui) <= MAX_GUI_ROOT_MODULES, gui


def test_the_gui_never_runs_sql() -> None:
    """Reads for charts and the incident log go through the worker path; widgets/ holds no SQLite import."""
    offenders = []
    for path in _modules("widgets"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("sqlite3", "sqlite_utils") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
