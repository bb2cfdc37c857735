"""Input the way a user gives it, for the GUI tests."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit
from pytestqt.qtbot import QtBot


def type_into(qtbot: QtBot, edit: QLineEdit, text: str) -> None:
    """Replace the field's text the way a user does (select all, type; an empty text deletes)."""
    edit.selectAll()
    if text:
        qtbot.keyClicks(edit, text)
    else:
        qtbot.keyClick(edit, Qt.Key.Key_Delete)
