"""The fleet inventory editor: add, edit and remove sites, nodes, sources and receivers, test a source, send a
test to a receiver, save as TOML.

The dialog edits the inventory's document form (the dict tomllib returns) and validates it after every edit
with ``console.config.inventory.fleet_from_document``, so the problems it shows carry the same key paths as a file's
(``nodes[1].sources[0].url: ...``). Saving writes ``dump_inventory`` of the validated fleet. The forms
(``widgets.inventory.forms``, ``widgets.inventory.receiver_form``), the tree (``widgets.inventory.tree``) and
"Test connection" and "Send test" (``widgets.inventory.probe``, on worker lanes) are their own modules; this one
holds the document and the flow.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from console.config.fleet import Fleet
from console.config.inventory import (
    InventoryError,
    default_inventory_path,
    dump_inventory,
    fleet_from_document,
    receiver_from_document,
    source_from_document,
)
from console.polling.probe import probe
from widgets.inventory.document import InventoryDocument
from widgets.inventory.forms import TESTING_TEXT, NodeForm, SiteForm, SourceForm, plain_label
from widgets.inventory.probe import ProbeFunction, TableTests, probe_job, send_test_job
from widgets.inventory.receiver_form import ReceiverForm
from widgets.inventory.tree import InventoryTree, Selection, Table, item_selection


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
        self.document = InventoryDocument(fleet)
        self.problems: list[str] = []
        self._fleet: Fleet | None = None
        self._selection: Selection = ()
        self._probe_function = probe_function
        self._tests = TableTests(self)
        self._tests.test_changed.connect(self._on_tests_test_changed)
        self._build()
        self._rebuild_tree()
        self._revalidate()

    # -- layout ----

    def _build(self) -> None:
        self.tree = InventoryTree()
        self.tree.currentItemChanged.connect(self._on_tree_current_changed)
        self.add_site_button = QPushButton("Add site")
        self.add_node_button = QPushButton("Add node")
        self.add_source_button = QPushButton("Add source")
        self.add_receiver_button = QPushButton("Add receiver")
        self.add_receiver_button.setToolTip("Who is told about incidents: an Alertmanager or a webhook")
        self.remove_button = QPushButton("Remove")
        self.add_site_button.clicked.connect(self.add_site)
        self.add_node_button.clicked.connect(self.add_node)
        self.add_source_button.clicked.connect(self.add_source)
        self.add_receiver_button.clicked.connect(self.add_receiver)
        self.remove_button.clicked.connect(self.remove_selected)
        buttons = QHBoxLayout()
        for button in (
            self.add_site_button,
            self.add_node_button,
            self.add_source_button,
            self.add_receiver_button,
            self.remove_button,
        ):
            buttons.addWidget(button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.tree)
        left_layout.addLayout(buttons)

        self.site_form = SiteForm()
        self.node_form = NodeForm()
        self.source_form = SourceForm()
        self.receiver_form = ReceiverForm()
        self.empty_page = plain_label("Select a site, a node, a source or a receiver, or add one.")
        self.stack = QStackedWidget()
        for page in (self.empty_page, self.site_form, self.node_form, self.source_form, self.receiver_form):
            self.stack.addWidget(page)
        for form in (self.site_form, self.node_form, self.source_form, self.receiver_form):
            form.edited.connect(self._on_form_edited)
        self.source_form.test_requested.connect(self.test_selected_source)
        self.receiver_form.test_requested.connect(self.send_test_to_selected_receiver)
        self.receiver_form.reload_requested.connect(self._reload_receiver_form)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)

        self.problem_list = QListWidget()
        self.problem_list.setMaximumHeight(120)
        self.status_label = plain_label()
        self.button_box = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.save_button = self.button_box.button(QDialogButtonBox.StandardButton.Save)
        self.button_box.accepted.connect(self.save)
        self.button_box.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(plain_label(f"Inventory file: {self.path}"))
        layout.addWidget(self.problem_list)
        layout.addWidget(self.status_label)
        layout.addWidget(self.button_box)

    # -- the document ----

    @property
    def sites(self) -> list[Table]:
        return self.document.sites

    @property
    def nodes(self) -> list[Table]:
        return self.document.nodes

    def fleet(self) -> Fleet | None:
        """The fleet as edited, or None while it has problems (see ``problems``)."""
        return self._fleet

    def _table(self, selection: Selection) -> Table | None:
        return self.document.table(selection)

    def add_site(self) -> None:
        self._changed(self.document.add_site())

    def add_node(self) -> None:
        self._changed(self.document.add_node())

    def add_source(self) -> None:
        if self._selection and self._selection[0] in ("node", "source"):
            self._changed(self.document.add_source(self._selection[1]))

    def add_receiver(self) -> None:
        self._changed(self.document.add_receiver())

    def remove_selected(self) -> None:
        selection = self._selection
        if not selection:
            return
        table = self._table(selection)
        if table is not None:
            self._tests.forget(table)
        self._changed(self.document.remove(selection))

    def _on_form_edited(self, key: str, value: Any) -> None:
        selection = self._selection
        table = self._table(selection)
        if table is None:
            return
        reshaped = self.document.edit(selection, key, value)
        form = {"source": self.source_form, "receiver": self.receiver_form}.get(selection[0])
        if form is not None:
            if reshaped:
                form.load(table)
            form.update_visibility(table)
            self._tests.forget_result(table)  # a result no longer describes the edited settings
            self._show_test_state(table)
        self.tree.refresh_texts(self._table)
        self._revalidate()

    def _reload_receiver_form(self) -> None:
        table = self._table(self._selection)
        if table is not None and self._selection[0] == "receiver":
            self.receiver_form.load(table)
            self._show_form_problems()

    def _changed(self, selection: Selection) -> None:
        self._rebuild_tree(selection)
        self._revalidate()

    # -- validation ----

    def _revalidate(self) -> None:
        try:
            self._fleet = fleet_from_document(self.document.for_validation(), str(self.path))
            self.problems = []
        except InventoryError as exc:
            self._fleet = None
            self.problems = exc.problems
        self.problem_list.clear()
        self.problem_list.addItems(self.problems)
        self.problem_list.setVisible(bool(self.problems))
        self.save_button.setEnabled(not self.problems)
        self._show_form_problems()
        self.tree.mark_problems(self.problems, self._table)

    def _show_form_problems(self) -> None:
        selection = self._selection
        if not selection:
            return
        if selection[0] == "site":
            self.site_form.show_problems(f"sites[{selection[1]}]", self.problems)
        elif selection[0] == "node":
            path = f"nodes[{selection[1]}]"
            self.node_form.show_problems(path, self.problems, exclude=f"{path}.sources[")
        elif selection[0] == "receiver":
            self.receiver_form.show_problems(f"notify[{selection[1]}]", self.problems)
        elif len(selection) == 3:
            self.source_form.show_problems(f"nodes[{selection[1]}].sources[{selection[2]}]", self.problems)

    # -- the tree ----

    def _rebuild_tree(self, selection: Selection | None = None) -> None:
        wanted = self._selection if selection is None else selection
        self.tree.rebuild(
            len(self.sites), [len(node.get("sources", [])) for node in self.nodes], len(self.document.receivers)
        )
        self.tree.refresh_texts(self._table)
        item = self.tree.find_item(wanted)
        if item is not None:
            self.tree.setCurrentItem(item)
        self._select(wanted if item is not None else ())

    def _on_tree_current_changed(self, current: QTreeWidgetItem | None, _previous: object) -> None:
        self._select(item_selection(current) if current is not None else ())

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
        elif selection[0] == "receiver":
            self.receiver_form.load(table)
            self._show_test_state(table)
            self.stack.setCurrentWidget(self.receiver_form)
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
            self._tests.refuse(table, "Cannot test: " + "; ".join(exc.problems))
            self._show_test_state(table)
            return
        node = self.nodes[selection[1]]
        name, site = str(node.get("name", "probe")), str(node.get("site", ""))
        self._tests.start(table, probe_job(self._probe_function, spec, self.document.timeout_for(node), name, site))
        self._show_test_state(table)

    # -- send test ----

    def send_test_to_selected_receiver(self) -> None:
        selection = self._selection
        table = self._table(selection)
        if table is None or selection[0] != "receiver":
            return
        path = f"notify[{selection[1]}]"
        site_names = [str(site.get("name", "")) for site in self.sites]
        providers = [site.get("provider") for site in self.sites]
        try:
            receiver = receiver_from_document(table, path, site_names, providers)
        except InventoryError as exc:
            self._tests.refuse(table, "Cannot send: " + "; ".join(exc.problems))
            self._show_test_state(table)
            return
        self._tests.start(table, send_test_job(receiver))
        self._show_test_state(table)

    def _on_tests_test_changed(self) -> None:
        table = self._table(self._selection)
        if table is not None and self._selection[0] in ("source", "receiver"):
            self._show_test_state(table)

    def _show_test_state(self, table: Table) -> None:
        state = self._tests.state(table)
        form = self.receiver_form if self._selection[0] == "receiver" else self.source_form
        form.show_test(state.text, state.testing, state.ok)

    def wait_for_tests(self, timeout_s: float = 10.0) -> None:
        """End the probe lanes, waiting up to ``timeout_s`` for a probe in flight (tests, and a clean exit)."""
        self._tests.stop(timeout_s)

    def shutdown(self) -> None:
        """The app is quitting: end the probe lanes without waiting (a probe ends by its own timeout)."""
        self._tests.stop()

    def done(self, result: int) -> None:
        # Saved, cancelled or closed: a test in flight is abandoned and its lane ends; reopening starts afresh.
        self._tests.stop()
        super().done(result)

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


__all__ = ["TESTING_TEXT", "InventoryEditor"]
