"""The inventory editor's forms: one per kind of table (site, node, source), bound to keys of the document.

A form shows one table of the inventory's document form and says what the user typed as ``edited(key, value)``
(None removes the key); the editor applies it and revalidates. Text from nodes and from the file is never rich
text. The source form also holds the "Test connection" button and its result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from console.config.fleet import SourceKind
from console.config.inventory import SOURCE_KEYS

ERROR_COLOR = "#c62828"
WARNING_COLOR = "#b26a00"
TESTING_TEXT = "Testing..."
TLS_OFF_WARNING = "TLS verification is OFF for this target: its certificate is not checked."
LIST_KEYS = frozenset({"tags", "sites", "providers"})  # typed comma separated, stored as arrays
SECRET_KINDS = (
    ("", "none"),
    ("env", "environment variable"),
    ("file", "file"),
    ("keyring", "system keyring"),
)


def plain_label(text: str = "", color: str | None = None) -> QLabel:
    # Text from nodes and from the file is never rich text: a name like "<img src=...>" stays literal.
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if color:
        label.setStyleSheet(f"color: {color};")
    return label


def coerce_text(key: str, text: str) -> Any:
    """Field text to a document value; what does not convert stays text so the parser names the problem."""
    text = text.strip()
    converters: Mapping[str, Callable[[str], Any]] = {"interval_s": float, "timeout_s": float, "port": int}
    if key in converters:
        with contextlib.suppress(ValueError):
            return converters[key](text)
    return text


def display_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # a keyring reference with its own service
        return str(value.get("name", ""))
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


class TableForm(QWidget):
    """Line edits bound to keys of one document table; an edit emits ``edited(key, value)`` (None removes)."""

    edited = Signal(str, object)

    def __init__(self, fields: Mapping[str, tuple[str, str]]) -> None:
        super().__init__()
        self.form = QFormLayout()
        self.edits: dict[str, QLineEdit] = {}
        for key, (label, placeholder) in fields.items():
            edit = QLineEdit()
            edit.setObjectName(key)
            edit.setPlaceholderText(placeholder)
            edit.textEdited.connect(lambda text, key=key: self._on_text_edited(key, text))
            self.edits[key] = edit
            self.form.addRow(label, edit)
        self.problems_label = plain_label(color=ERROR_COLOR)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        self.extra = QVBoxLayout()
        layout.addLayout(self.extra)
        layout.addWidget(self.problems_label)
        layout.addStretch(1)
        self.loading = False

    def _on_text_edited(self, key: str, text: str) -> None:
        if key in LIST_KEYS:
            items = [item.strip() for item in text.split(",") if item.strip()]
            self.edited.emit(key, items or None)
        else:
            self.edited.emit(key, coerce_text(key, text) if text.strip() else None)

    def load(self, table: Mapping[str, Any]) -> None:
        self.loading = True
        try:
            for key, edit in self.edits.items():
                edit.setText(display_value(table.get(key)))
        finally:
            self.loading = False

    def show_problems(self, path: str, problems: list[str], *, exclude: str | None = None) -> None:
        """Problems of this table (key path ``path``) inline: a list under the form, and marked fields."""
        mine = [
            p for p in problems if p.startswith((f"{path}.", f"{path}:")) and not (exclude and p.startswith(exclude))
        ]
        self.problems_label.setText("\n".join(mine))
        self.problems_label.setVisible(bool(mine))
        for key, widget in self.field_widgets().items():
            hits = [p for p in mine if p.startswith((f"{path}.{key}:", f"{path}.{key}."))]
            widget.setStyleSheet(f"border: 1px solid {ERROR_COLOR};" if hits else "")
            widget.setToolTip("\n".join(hits))

    def field_widgets(self) -> dict[str, QWidget]:
        return dict(self.edits)


class SecretRow(QWidget):
    """Where a secret is read from, never the secret: a kind (environment, file, keyring) and a name, for the
    keys ``<prefix>_env``, ``<prefix>_file`` or ``<prefix>_keyring``; an edit emits ``edited`` for each of them."""

    edited = Signal(str, object)

    def __init__(self) -> None:
        super().__init__()
        self.kind = QComboBox()
        for value, label in SECRET_KINDS:
            self.kind.addItem(label, value)
        self.name = QLineEdit()
        self.name.setObjectName("secret_name")
        self.name.setPlaceholderText("variable name, file path, or keyring entry (never the secret)")
        self.kind.currentIndexChanged.connect(self._on_edited)
        self.name.textEdited.connect(self._on_edited)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.kind)
        layout.addWidget(self.name, 1)
        self.prefix = ""
        self._keyring_service: str | None = None
        self._loading = False

    def load(self, table: Mapping[str, Any], prefix: str) -> None:
        """Show the reference under ``prefix`` (``""``: this table takes no secret)."""
        self._loading = True
        try:
            self.prefix = prefix
            self._keyring_service = None
            self.kind.setCurrentIndex(0)
            self.name.setText("")
            for index, (suffix, _label) in enumerate(SECRET_KINDS[1:], start=1):
                value = table.get(f"{prefix}_{suffix}")
                if prefix and value is not None:
                    self.kind.setCurrentIndex(index)
                    self.name.setText(display_value(value))
                    if isinstance(value, dict):
                        self._keyring_service = str(value.get("service", ""))
        finally:
            self._loading = False

    def keys(self) -> list[str]:
        return [f"{self.prefix}_{suffix}" for suffix, _label in SECRET_KINDS[1:]] if self.prefix else []

    def _on_edited(self, *_args: object) -> None:
        if self._loading or not self.prefix:
            return
        for key in self.keys():
            self.edited.emit(key, None)
        suffix = self.kind.currentData()
        if suffix:
            name = self.name.text().strip()
            value: Any = name
            if suffix == "keyring" and self._keyring_service:
                value = {"service": self._keyring_service, "name": name}
            self.edited.emit(f"{self.prefix}_{suffix}", value)

    def field_widgets(self) -> dict[str, QWidget]:
        return {key: self.name for key in self.keys()}


class SiteForm(TableForm):
    def __init__(self) -> None:
        super().__init__(
            {
                "name": ("Name", "e.g. aws-use1"),
                "provider": ("Provider", "e.g. aws"),
                "region": ("Region", "optional"),
                "interval_s": ("Poll interval (s)", "1.0"),
                "timeout_s": ("Timeout (s)", "3.0"),
                "selector": ("Selector", 'prometheus sites: e.g. {job="dcgm", cluster="ord1"}'),
            }
        )


class NodeForm(TableForm):
    def __init__(self) -> None:
        super().__init__(
            {
                "name": ("Name", "e.g. p5-017"),
                "tags": ("Tags", "comma separated, optional"),
                "interval_s": ("Poll interval (s)", "the site's default"),
                "timeout_s": ("Timeout (s)", "the site's default"),
                "rack": ("Rack", "optional, e.g. r12"),
                "cooling_loop": ("Cooling loop", "optional, e.g. cdu-3"),
                "power_feed": ("Power feed", "optional, e.g. pdu-a7"),
                "nvlink_domain": ("NVLink domain", "optional, e.g. nvl72-04"),
            }
        )
        self.site_combo = QComboBox()
        self.site_combo.setEditable(True)
        self.site_combo.currentTextChanged.connect(self._on_site_changed)
        self.form.insertRow(1, "Site", self.site_combo)

    def set_sites(self, names: list[str], current: str) -> None:
        self.loading = True
        try:
            self.site_combo.clear()
            self.site_combo.addItems(names)
            self.site_combo.setCurrentText(current)
        finally:
            self.loading = False

    def _on_site_changed(self, text: str) -> None:
        if not self.loading:
            self.edited.emit("site", text.strip() or None)

    def field_widgets(self) -> dict[str, QWidget]:
        return {**self.edits, "site": self.site_combo}


class EndpointForm(TableForm):
    """A form for something the console talks to (a source, a receiver): a kind, a secret reference, TLS, and a
    button that tries it, with the result under it. ``test_requested`` asks the editor to try the table."""

    test_requested = Signal()

    def __init__(self, fields: Mapping[str, tuple[str, str]], kinds: list[str], test_text: str) -> None:
        super().__init__(fields)
        self.test_text = test_text
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(kinds)
        self.kind_combo.currentTextChanged.connect(self._on_kind_changed)
        self.form.insertRow(0, "Kind", self.kind_combo)
        self.secret_row = SecretRow()
        self.secret_row.edited.connect(self.edited)
        self.verify_tls = QCheckBox("Verify TLS certificate")
        self.verify_tls.toggled.connect(self._on_verify_tls_toggled)
        self.tls_warning = plain_label(f"\u26a0 {TLS_OFF_WARNING}", WARNING_COLOR)
        self.tls_warning.setStyleSheet(f"color: {WARNING_COLOR}; font-weight: bold;")
        self.test_button = QPushButton(test_text)
        self.test_button.clicked.connect(self.test_requested)
        self.test_result = plain_label()
        self.extra.addWidget(self.tls_warning)
        self.extra.addWidget(self.test_button)
        self.extra.addWidget(self.test_result)

    def load(self, table: Mapping[str, Any]) -> None:
        super().load(table)
        self.loading = True
        try:
            self.kind_combo.setCurrentText(str(table.get("kind", "")))
            self.verify_tls.setChecked(table.get("verify_tls", True) is not False)
            self.load_more(table)
            self.update_visibility(table)
        finally:
            self.loading = False

    def load_more(self, table: Mapping[str, Any]) -> None:
        """What a kind of endpoint shows beyond the line edits, kind and TLS (called while loading)."""

    def update_visibility(self, table: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _on_kind_changed(self, text: str) -> None:
        if not self.loading:
            self.edited.emit("kind", text)

    def _on_verify_tls_toggled(self, checked: bool) -> None:
        if not self.loading:
            self.edited.emit("verify_tls", None if checked else False)

    def field_widgets(self) -> dict[str, QWidget]:
        widgets: dict[str, QWidget] = {**self.edits, "kind": self.kind_combo, "verify_tls": self.verify_tls}
        return {**widgets, **self.secret_row.field_widgets()}

    def show_test(self, text: str, testing: bool, ok: bool | None) -> None:
        self.test_button.setText(TESTING_TEXT if testing else self.test_text)
        self.test_button.setEnabled(not testing)
        self.test_result.setText(text)
        color = {True: "#2e7d32", False: ERROR_COLOR, None: "palette(text)"}[ok]
        self.test_result.setStyleSheet(f"color: {color};")


class SourceForm(EndpointForm):
    def __init__(self) -> None:
        super().__init__(
            {
                "url": ("URL", "http://host:9400/metrics"),
                "host": ("Host", "host name or address"),
                "port": ("Port", "22"),
                "user": ("User", ""),
                "key_file": ("Key file", "~/.ssh/id_ed25519"),
                "known_hosts": ("known_hosts", "~/.ssh/known_hosts"),
                "ca_file": ("CA file", "optional, absolute path"),
            },
            [str(kind) for kind in SourceKind],
            "Test connection",
        )
        self.form.addRow("Secret from", self.secret_row)
        self.form.addRow("", self.verify_tls)

    def load_more(self, table: Mapping[str, Any]) -> None:
        kind = SourceKind(table["kind"]) if table.get("kind") in set(SourceKind) else None
        keys = SOURCE_KEYS.get(kind, ()) if kind else ()
        self.secret_row.load(table, "token" if "token_env" in keys else "password" if "password_env" in keys else "")

    def update_visibility(self, table: Mapping[str, Any]) -> None:
        kind = str(table.get("kind", ""))
        keys = SOURCE_KEYS.get(SourceKind(kind), ()) if kind in set(SourceKind) else ()
        for key, edit in self.edits.items():
            self.form.setRowVisible(edit, key in keys)
        self.form.setRowVisible(self.secret_row, bool(self.secret_row.prefix))
        self.form.setRowVisible(self.verify_tls, "verify_tls" in keys)
        self.tls_warning.setVisible("verify_tls" in keys and table.get("verify_tls", True) is False)
