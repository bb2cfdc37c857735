"""What ``gpu-console`` says when the GUI stack cannot load: one sentence naming what is missing."""

from __future__ import annotations

from widgets.launcher import gui_import_problem


def test_a_missing_pyside6_is_named_with_the_install_that_brings_it() -> None:
    message = gui_import_problem(ModuleNotFoundError("No module named 'PySide6'", name="PySide6"))
    assert "needs PySide6, which is not installed" in message
    assert "pip install gpu-ops-console" in message
    assert "\n" not in message


def test_a_missing_submodule_of_pyqtgraph_names_the_package() -> None:
    message = gui_import_problem(ModuleNotFoundError("No module named 'pyqtgraph.graphicsItems'", name="pyqtgraph.x"))
    assert "needs pyqtgraph," in message


def test_a_missing_system_library_names_the_library_and_the_debian_package() -> None:
    exc = ImportError("libEGL.so.1: cannot open shared object file: No such file or directory")
    message = gui_import_problem(exc)
    assert "libEGL.so.1" in message and "apt install libegl1" in message


def test_an_unknown_library_is_named_without_a_guessed_package() -> None:
    message = gui_import_problem(ImportError("libweird.so.7: cannot open shared object file"))
    assert "libweird.so.7" in message and "apt install" not in message
