"""The fleet inventory editor: add, edit and remove sites, nodes and sources, test a source, save as TOML.

The dialog edits the inventory's document form (the dict tomllib returns) and validates it after every edit
with ``console.config.inventory.fleet_from_document``, so the problems it shows carry the same key paths as a file's
(``nodes[1].sources[0].url: ...``). Saving writes ``dump_inventory`` of the validated fleet. "Test connection"
runs ``console.polling.probe.probe`` on a plain worker thread; the outcome comes back through a queued signal.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.config.fleet import Fleet, SourceKind, SourceSpec
from console.config.inventory import (
    DEFAULT_TIMEOUT_S,
    SOURCE_KEYS,
    InventoryError,
    default_inventory_path,
    dump_inventory,
    fleet_from_document,
    fleet_to_document,
    source_from_document,
)
from console.polling.probe import ProbeOutcome, probe
from console.samples.results import PollFailure

ProbeFunction = Callable[..., ProbeOutcome]
Table = dict[str, Any]
Selection = tuple[Any, ...]  # ("site", i), ("node", i), ("source", node i, source j), or () for nothing

ERROR_COLOR = "#c62828"
WARNING_COLOR = "#b26a00"
TESTING_TEXT = "Testing..."
TLS_OFF_WARNING = "TLS verification is OFF for this target: its certificate is not checked."
_SECRET_KINDS = (
    ("", "none"),
    ("env", "environment variable"),
    ("file", "file"),
    ("keyring", "system keyring"),
)


def _plain_label(text: str = "", color: str | None = None) -> QLabel:
    # Text from nodes and from the file is never rich text: a name like "<img src=...>" stays literal.
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if color:
        label.setStyleSheet(f"color: {color};")
    return label


def _coerce(key: str, text: str) -> Any:
    """Field text to a document value; what does not convert stays text so the parser names the problem."""
    text = text.strip()
    converters: Mapping[str, Callable[[str], Any]] = {"interval_s": float, "timeout_s": float, "port": int}
    if key in converters:
        with contextlib.suppress(ValueError):
            return converters[key](text)
    return text


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # a keyring reference with its own service
        return str(value.get("name", ""))
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


class _Form(QWidget):
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
        self.problems_label = _plain_label(color=ERROR_COLOR)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        self.extra = QVBoxLayout()
        layout.addLayout(self.extra)
        layout.addWidget(self.problems_label)
        layout.addStretch(1)
        self.loading = False

    def _on_text_edited(self, key: str, text: str) -> None:
        if key == "tags":
            tags = [tag.strip() for tag in text.split(",") if tag.strip()]
            self.edited.emit(key, tags or None)
        else:
            self.edited.emit(key, _coerce(key, text) if text.strip() else None)

    def load(self, table: Mapping[str, Any]) -> None:
        self.loading = True
        try:
            for key, edit in self.edits.items():
                edit.setText(_display(table.get(key)))
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


class _SiteForm(_Form):
    def __init__(self) -> None:
        super().__init__(
            {
                "name": ("Name", "e.g. aws-use1"),
                "provider": ("Provider", "e.g. aws"),
                "region": ("Region", "optional"),
                "interval_s": ("Poll interval (s)", "1.0"),
                "timeout_s": ("Timeout (s)", "3.0"),
            }
        )


class _NodeForm(_Form):
    def __init__(self) -> None:
        super().__init__(
            {
                "name": ("Name", "e.g. p5-017"),
                "tags": ("Tags", "comma separated, optional"),
                "interval_s": ("Poll interval (s)", "the site's default"),
                "timeout_s": ("Timeout (s)", "the site's default"),
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


class _SourceForm(_Form):
    test_requested = Signal()

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
            }
        )
        self.kind_combo = QComboBox()
        self.kind_combo.addItems([str(kind) for kind in SourceKind])
        self.kind_combo.currentTextChanged.connect(self._on_kind_changed)
        self.form.insertRow(0, "Kind", self.kind_combo)
        self.secret_kind = QComboBox()
        for value, label in _SECRET_KINDS:
            self.secret_kind.addItem(label, value)
        self.secret_name = QLineEdit()
        self.secret_name.setObjectName("secret_name")
        self.secret_name.setPlaceholderText("variable name, file path, or keyring entry (never the secret)")
        self.secret_kind.currentIndexChanged.connect(self._on_secret_edited)
        self.secret_name.textEdited.connect(self._on_secret_edited)
        secret_row = QHBoxLayout()
        secret_row.addWidget(self.secret_kind)
        secret_row.addWidget(self.secret_name, 1)
        self.secret_row = QWidget()
        self.secret_row.setLayout(secret_row)
        secret_row.setContentsMargins(0, 0, 0, 0)
        self.form.addRow("Secret from", self.secret_row)
        self.verify_tls = QCheckBox("Verify TLS certificate")
        self.verify_tls.toggled.connect(self._on_verify_tls_toggled)
        self.form.addRow("", self.verify_tls)
        self.tls_warning = _plain_label(f"\u26a0 {TLS_OFF_WARNING}", WARNING_COLOR)
        self.tls_warning.setStyleSheet(f"color: {WARNING_COLOR}; font-weight: bold;")
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_requested)
        self.test_result = _plain_label()
        self.extra.addWidget(self.tls_warning)
        self.extra.addWidget(self.test_button)
        self.extra.addWidget(self.test_result)
        self._secret_prefix = ""
        self._keyring_service: str | None = None

    def load(self, table: Mapping[str, Any]) -> None:
        super().load(table)
        self.loading = True
        try:
            self.kind_combo.setCurrentText(str(table.get("kind", "")))
            self.verify_tls.setChecked(table.get("verify_tls", True) is not False)
            self._load_secret(table)
            self.update_visibility(table)
        finally:
            self.loading = False

    def _load_secret(self, table: Mapping[str, Any]) -> None:
        kind = SourceKind(table["kind"]) if table.get("kind") in set(SourceKind) else None
        keys = SOURCE_KEYS.get(kind, ()) if kind else ()
        self._secret_prefix = "token" if "token_env" in keys else "password" if "password_env" in keys else ""
        self._keyring_service = None
        self.secret_kind.setCurrentIndex(0)
        self.secret_name.setText("")
        for index, (suffix, _label) in enumerate(_SECRET_KINDS[1:], start=1):
            value = table.get(f"{self._secret_prefix}_{suffix}")
            if self._secret_prefix and value is not None:
                self.secret_kind.setCurrentIndex(index)
                self.secret_name.setText(_display(value))
                if isinstance(value, dict):
                    self._keyring_service = str(value.get("service", ""))

    def update_visibility(self, table: Mapping[str, Any]) -> None:
        kind = str(table.get("kind", ""))
        keys = SOURCE_KEYS.get(SourceKind(kind), ()) if kind in set(SourceKind) else ()
        for key, edit in self.edits.items():
            self.form.setRowVisible(edit, key in keys)
        self.form.setRowVisible(self.secret_row, bool(self._secret_prefix))
        self.form.setRowVisible(self.verify_tls, "verify_tls" in keys)
        self.tls_warning.setVisible("verify_tls" in keys and table.get("verify_tls", True) is False)

    def _on_kind_changed(self, text: str) -> None:
        if not self.loading:
            self.edited.emit("kind", text)

    def _on_verify_tls_toggled(self, checked: bool) -> None:
        if not self.loading:
            self.edited.emit("verify_tls", None if checked else False)

    def _on_secret_edited(self, *_args: object) -> None:
        if self.loading or not self._secret_prefix:
            return
        for suffix, _label in _SECRET_KINDS[1:]:
            self.edited.emit(f"{self._secret_prefix}_{suffix}", None)
        suffix = self.secret_kind.currentData()
        if suffix:
            name = self.secret_name.text().strip()
            value: Any = name
            if suffix == "keyring" and self._keyring_service:
                value = {"service": self._keyring_service, "name": name}
            self.edited.emit(f"{self._secret_prefix}_{suffix}", value)

    def field_widgets(self) -> dict[str, QWidget]:
        widgets: dict[str, QWidget] = {**self.edits, "kind": self.kind_combo, "verify_tls": self.verify_tls}
        if self._secret_prefix:
            for suffix, _label in _SECRET_KINDS[1:]:
                widgets[f"{self._secret_prefix}_{suffix}"] = self.secret_name
        return widgets

    def show_test(self, text: str, testing: bool, ok: bool | None) -> None:
        self.test_button.setText(TESTING_TEXT if testing else "Test connection")
        self.test_button.setEnabled(not testing)
        self.test_result.setText(text)
        color = {True: "#2e7d32", False: ERROR_COLOR, None: "palette(text)"}[ok]
        self.test_result.setStyleSheet(f"color: {color};")


def _children(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
    return [child for i in range(item.childCount()) if (child := item.child(i)) is not None]


def _item_selection(item: QTreeWidgetItem) -> Selection:
    """What a tree item stands for (Qt may hand a stored tuple back as a list; group items hold nothing)."""
    data = item.data(0, Qt.ItemDataRole.UserRole)
    return tuple(data) if data else ()


class _ProbeBridge(QObject):
    """Carries a finished probe from the worker thread to the GUI thread (a queued connection)."""

    probe_finished = Signal(int, object)


class InventoryEditor(QDialog):
    """Edit a fleet; ``fleet_saved`` carries the validated ``Fleet`` after it was written to ``path``."""

    fleet_saved = Signal(object)

    def __init__(
        self,
        fleet: Fleet | None = None,
        path: str | Path | None = None,
        parent: QWidget | None = None,
        *,
        probe_function: ProbeFunction = probe,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fleet inventory")
        self.resize(900, 560)
        self.path = Path(path) if path is not None else default_inventory_path()
        self.document: dict[str, Any] = fleet_to_document(fleet or Fleet(sites=(), nodes=()))
        self.document.setdefault("rule_overrides", [])
        self.problems: list[str] = []
        self._fleet: Fleet | None = None
        self._selection: Selection = ()
        self._probe_function = probe_function
        self._test_ids = itertools.count(1)
        self._tests: dict[int, tuple[int, str, bool, bool | None]] = {}  # id(table) -> (test id, text, testing, ok)
        self._threads: list[threading.Thread] = []
        self._bridge = _ProbeBridge(self)
        self._bridge.probe_finished.connect(self._on_probe_finished)
        self._build()
        self._rebuild_tree()
        self._revalidate()

    # -- layout ----

    def _build(self) -> None:
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.currentItemChanged.connect(self._on_tree_current_changed)
        self.add_site_button = QPushButton("Add site")
        self.add_node_button = QPushButton("Add node")
        self.add_source_button = QPushButton("Add source")
        self.remove_button = QPushButton("Remove")
        self.add_site_button.clicked.connect(self.add_site)
        self.add_node_button.clicked.connect(self.add_node)
        self.add_source_button.clicked.connect(self.add_source)
        self.remove_button.clicked.connect(self.remove_selected)
        buttons = QHBoxLayout()
        for button in (
            self.add_site_button,
            self.add_node_button,
            self.add_source_button,
            self.remove_button,
        ):
            buttons.addWidget(button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.tree)
        left_layout.addLayout(buttons)

        self.site_form = _SiteForm()
        self.node_form = _NodeForm()
        self.source_form = _SourceForm()
        self.empty_page = _plain_label("Select a site, a node or a source, or add one.")
        self.stack = QStackedWidget()
        for page in (self.empty_page, self.site_form, self.node_form, self.source_form):
            self.stack.addWidget(page)
        for form in (self.site_form, self.node_form, self.source_form):
            form.edited.connect(self._on_form_edited)
        self.source_form.test_requested.connect(self.test_selected_source)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)

        self.problem_list = QListWidget()
        self.problem_list.setMaximumHeight(120)
        self.status_label = _plain_label()
        self.button_box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.button_box.button(QDialogButtonBox.StandardButton.Save)
        self.button_box.accepted.connect(self.save)
        self.button_box.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(_plain_label(f"Inventory file: {self.path}"))
        layout.addWidget(self.problem_list)
        layout.addWidget(self.status_label)
        layout.addWidget(self.button_box)

    # -- the document ----

    @property
    def sites(self) -> list[Table]:
        sites: list[Table] = self.document.setdefault("sites", [])
        return sites

    @property
    def nodes(self) -> list[Table]:
        nodes: list[Table] = self.document.setdefault("nodes", [])
        return nodes

    def fleet(self) -> Fleet | None:
        """The fleet as edited, or None while it has problems (see ``problems``)."""
        return self._fleet

    def _table(self, selection: Selection) -> Table | None:
        try:
            if selection[0] == "site":
                return self.sites[selection[1]]
            if selection[0] == "node":
                return self.nodes[selection[1]]
            if selection[0] == "source" and len(selection) == 3:
                sources: list[Table] = self.nodes[selection[1]].get("sources", [])
                return sources[selection[2]]
        except (IndexError, KeyError):
            return None
        return None

    def _unique_name(self, tables: list[Table], stem: str) -> str:
        taken = {table.get("name") for table in tables}
        return next(f"{stem}-{n}" for n in itertools.count(1) if f"{stem}-{n}" not in taken)

    def add_site(self) -> None:
        self.sites.append({"name": self._unique_name(self.sites, "site"), "provider": ""})
        self._changed(("site", len(self.sites) - 1))

    def add_node(self) -> None:
        site = self.sites[0]["name"] if self.sites else ""
        node: Table = {"name": self._unique_name(self.nodes, "node"), "site": site, "sources": []}
        self.nodes.append(node)
        self._changed(("node", len(self.nodes) - 1))

    def add_source(self) -> None:
        if not self._selection or self._selection[0] not in ("node", "source"):
            return
        node_index = self._selection[1]
        sources: list[Table] = self.nodes[node_index].setdefault("sources", [])
        sources.append({"kind": str(SourceKind.DCGM), "url": ""})
        self._changed(("source", node_index, len(sources) - 1))

    def remove_selected(self) -> None:
        selection = self._selection
        if not selection:
            return
        table = self._table(selection)
        if table is not None:
            self._tests.pop(id(table), None)
        if selection[0] == "site":
            del self.sites[selection[1]]
            self._changed(())
        elif selection[0] == "node":
            del self.nodes[selection[1]]
            self._changed(())
        elif len(selection) == 3:
            del self.nodes[selection[1]]["sources"][selection[2]]
            self._changed(("node", selection[1]))

    def _on_form_edited(self, key: str, value: Any) -> None:
        table = self._table(self._selection)
        if table is None:
            return
        if self._selection[0] == "site" and key == "name":
            self._rename_site(table.get("name"), value)
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        if self._selection[0] == "source":
            if key == "kind":
                self._drop_keys_the_kind_does_not_take(table)
                self.source_form.load(table)
            self.source_form.update_visibility(table)
            if self._tests.get(id(table), (0, "", False, None))[2] is False:
                self._tests.pop(id(table), None)  # a result no longer describes the edited settings
                self._show_test_state(table)
        self._refresh_tree_texts()
        self._revalidate()

    def _rename_site(self, old: Any, new: Any) -> None:
        """Nodes and overrides follow a renamed site, so a rename does not strand them."""
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            return
        for node in self.nodes:
            if node.get("site") == old:
                node["site"] = new
        for override in self.document.get("rule_overrides", []):
            if override.get("scope") == f"site:{old}":
                override["scope"] = f"site:{new}"

    @staticmethod
    def _drop_keys_the_kind_does_not_take(table: Table) -> None:
        kind = table.get("kind")
        keys = SOURCE_KEYS.get(SourceKind(kind), ()) if kind in set(SourceKind) else ()
        for key in [k for k in table if k not in ("kind", "options") and k not in keys]:
            del table[key]
        if "url" in keys:
            table.setdefault("url", "")

    def _changed(self, selection: Selection) -> None:
        self._rebuild_tree(selection)
        self._revalidate()

    # -- validation ----

    def _revalidate(self) -> None:
        document = dict(self.document)
        if not document.get("rule_overrides"):
            document.pop("rule_overrides", None)
        try:
            self._fleet = fleet_from_document(document, str(self.path))
            self.problems = []
        except InventoryError as exc:
            self._fleet = None
            self.problems = exc.problems
        self.problem_list.clear()
        self.problem_list.addItems(self.problems)
        self.problem_list.setVisible(bool(self.problems))
        self.save_button.setEnabled(not self.problems)
        self._show_form_problems()
        self._mark_tree_problems()

    def _show_form_problems(self) -> None:
        selection = self._selection
        if not selection:
            return
        if selection[0] == "site":
            self.site_form.show_problems(f"sites[{selection[1]}]", self.problems)
        elif selection[0] == "node":
            path = f"nodes[{selection[1]}]"
            self.node_form.show_problems(path, self.problems, exclude=f"{path}.sources[")
        elif len(selection) == 3:
            self.source_form.show_problems(f"nodes[{selection[1]}].sources[{selection[2]}]", self.problems)

    # -- the tree ----

    def _rebuild_tree(self, selection: Selection | None = None) -> None:
        wanted = self._selection if selection is None else selection
        self.tree.blockSignals(True)
        try:
            self.tree.clear()
            self._sites_item = QTreeWidgetItem(self.tree, ["Sites"])
            self._nodes_item = QTreeWidgetItem(self.tree, ["Nodes"])
            for i in range(len(self.sites)):
                QTreeWidgetItem(self._sites_item).setData(0, Qt.ItemDataRole.UserRole, ("site", i))
            for i, node in enumerate(self.nodes):
                node_item = QTreeWidgetItem(self._nodes_item)
                node_item.setData(0, Qt.ItemDataRole.UserRole, ("node", i))
                for j in range(len(node.get("sources", []))):
                    QTreeWidgetItem(node_item).setData(0, Qt.ItemDataRole.UserRole, ("source", i, j))
            self.tree.expandAll()
        finally:
            self.tree.blockSignals(False)
        self._refresh_tree_texts()
        item = self._find_item(wanted)
        if item is not None:
            self.tree.setCurrentItem(item)
        self._select(wanted if item is not None else ())

    def _items(self) -> list[QTreeWidgetItem]:
        items: list[QTreeWidgetItem] = []
        for group in (self._sites_item, self._nodes_item):
            for child in _children(group):
                items.append(child)
                items.extend(_children(child))
        return items

    def _find_item(self, selection: Selection) -> QTreeWidgetItem | None:
        if not selection:
            return None
        return next((item for item in self._items() if _item_selection(item) == selection), None)

    def _refresh_tree_texts(self) -> None:
        for item in self._items():
            selection = _item_selection(item)
            table = self._table(selection) or {}
            if selection[0] == "site":
                text = f"{table.get('name', '?')} ({table.get('provider') or 'no provider'})"
            elif selection[0] == "node":
                text = f"{table.get('name', '?')} @ {table.get('site') or 'no site'}"
            else:
                text = f"{table.get('kind', '?')} {_display(table.get('url') or table.get('host'))}".strip()
                if table.get("verify_tls", True) is False:
                    text += "  \u26a0 TLS verification off"
            item.setText(0, text)

    def _mark_tree_problems(self) -> None:
        for item in self._items():
            selection = _item_selection(item)
            path = {"site": "sites[{1}]", "node": "nodes[{1}]", "source": "nodes[{1}].sources[{2}]"}[selection[0]]
            prefix = path.format(*selection)
            hits = [p for p in self.problems if p.startswith((f"{prefix}.", f"{prefix}:"))]
            tls_off = selection[0] == "source" and (self._table(selection) or {}).get("verify_tls", True) is False
            color = ERROR_COLOR if hits else WARNING_COLOR if tls_off else None
            item.setForeground(0, QBrush(QColor(color)) if color else QBrush())
            item.setToolTip(0, "\n".join(hits) or (TLS_OFF_WARNING if tls_off else ""))

    def _on_tree_current_changed(self, current: QTreeWidgetItem | None, _previous: object) -> None:
        self._select(_item_selection(current) if current is not None else ())

    def _select(self, selection: Selection) -> None:
        self._selection = selection
        table = self._table(selection) if selection else None
        if table is None:
            self._selection = ()
            self.stack.setCurrentWidget(self.empty_page)
        elif selection[0] == "site":
            self.site_form.load(table)
            self.stack.setCurrentWidget(self.site_form)
        elif selection[0] == "node":
            self.node_form.load(table)
            self.node_form.set_sites([str(site.get("name", "")) for site in self.sites], str(table.get("site", "")))
            self.stack.setCurrentWidget(self.node_form)
        else:
            self.source_form.load(table)
            self._show_test_state(table)
            self.stack.setCurrentWidget(self.source_form)
        in_node = bool(self._selection) and self._selection[0] in ("node", "source")
        self.add_source_button.setEnabled(in_node)
        self.remove_button.setEnabled(bool(self._selection))
        self._show_form_problems()

    # -- test connection ----

    def test_selected_source(self) -> None:
        selection = self._selection
        table = self._table(selection)
        if table is None or len(selection) != 3:
            return
        path = f"nodes[{selection[1]}].sources[{selection[2]}]"
        try:
            spec = source_from_document(table, path)
        except InventoryError as exc:
            self._tests[id(table)] = (0, "Cannot test: " + "; ".join(exc.problems), False, False)
            self._show_test_state(table)
            return
        node = self.nodes[selection[1]]
        test_id = next(self._test_ids)
        self._tests[id(table)] = (test_id, "", True, None)
        self._show_test_state(table)
        thread = threading.Thread(
            target=self._run_probe,
            args=(
                test_id,
                spec,
                self._timeout_for(node),
                str(node.get("name", "probe")),
                str(node.get("site", "")),
            ),
            name=f"inventory-probe-{test_id}",
            daemon=True,  # a probe is bounded by its timeout; never keep the app alive for one
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _timeout_for(self, node: Mapping[str, Any]) -> float:
        site = next((s for s in self.sites if s.get("name") == node.get("site")), {})
        for value in (node.get("timeout_s"), site.get("timeout_s")):
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return float(value)
        return DEFAULT_TIMEOUT_S

    def _run_probe(self, test_id: int, spec: SourceSpec, timeout_s: float, node: str, site: str) -> None:
        """Worker thread: never touches a widget; the outcome crosses to the GUI thread by a queued signal."""
        try:
            outcome = self._probe_function(spec, timeout_s=timeout_s, node=node, site=site or "probe")
        except Exception as exc:  # probe() reports failures as data; this is a last guard for the thread
            outcome = ProbeOutcome(spec, 0.0, failure=PollFailure.INTERNAL, reason=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(RuntimeError):  # the dialog was closed and deleted meanwhile
            self._bridge.probe_finished.emit(test_id, outcome)

    def _on_probe_finished(self, test_id: int, outcome: ProbeOutcome) -> None:
        for key, (running_id, _text, _testing, _ok) in list(self._tests.items()):
            if running_id == test_id:
                text = f"OK: {outcome.summary().removeprefix('ok: ')}" if outcome.ok else f"Failed: {outcome.summary()}"
                self._tests[key] = (test_id, text, False, outcome.ok)
        table = self._table(self._selection)
        if table is not None and self._selection[0] == "source":
            self._show_test_state(table)

    def _show_test_state(self, table: Table) -> None:
        _test_id, text, testing, ok = self._tests.get(id(table), (0, "", False, None))
        self.source_form.show_test(text, testing, ok)

    def wait_for_tests(self, timeout_s: float = 10.0) -> None:
        """Join the probe threads (tests, and a caller that wants a clean exit)."""
        for thread in self._threads:
            thread.join(timeout_s)

    # -- saving ----

    def save(self) -> None:
        self._revalidate()
        fleet = self._fleet
        if fleet is None:
            self.status_label.setText(f"Not saved: {len(self.problems)} problem(s) listed above.")
            return
        try:
            _write_atomically(self.path, dump_inventory(fleet))
        except OSError as exc:
            self.status_label.setText(f"Not saved: cannot write {self.path}: {exc.strerror or exc}")
            return
        self.status_label.setText(f"Saved {self.path}")
        self.fleet_saved.emit(fleet)
        self.accept()


def _write_atomically(path: Path, text: str) -> None:
    """Write next to the target and rename, so a crash never leaves half an inventory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


__all__ = ["InventoryEditor"]
