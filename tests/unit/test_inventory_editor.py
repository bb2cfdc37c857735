"""The inventory editor: add, validate inline, test a source against a real local server, save, reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTreeWidgetItem
from pytestqt.qtbot import QtBot

from console.config.fleet import Fleet, Node, Site, SourceKind, SourceSpec, Topology
from console.config.inventory import load_inventory
from tests.helpers.builders import ExporterStandIn, free_port
from tests.helpers.qt_input import type_into
from widgets.inventory.editor import TESTING_TEXT, InventoryEditor

# The offscreen platform warns when a dialog is shown; a real display does not.
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def exporter(fixtures_dir: Path) -> Iterator[ExporterStandIn]:
    payload = (fixtures_dir / "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt").read_text(encoding="utf-8")
    with ExporterStandIn(payload) as server:
        yield server


def select(dialog: InventoryEditor, group: int, *path: int) -> QTreeWidgetItem:
    """Select a tree item: group 0 is Sites, 1 is Nodes; then child indexes (node, source)."""
    item = dialog.tree.topLevelItem(group)
    for index in path:
        assert item is not None
        item = item.child(index)
    assert item is not None
    dialog.tree.setCurrentItem(item)
    return item


def open_editor(qtbot: QtBot, path: Path, fleet: Fleet | None = None) -> InventoryEditor:
    dialog = InventoryEditor(fleet, path)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_build_a_fleet_test_its_source_and_save(qtbot: QtBot, exporter: ExporterStandIn, tmp_path: Path) -> None:
    path = tmp_path / "config" / "fleet.toml"
    dialog = open_editor(qtbot, path)
    assert dialog.save_button.isEnabled()  # an empty fleet is valid

    qtbot.mouseClick(dialog.add_site_button, Qt.MouseButton.LeftButton)
    assert dialog.stack.currentWidget() is dialog.site_form
    assert "sites[0].provider: must not be empty" in dialog.site_form.problems_label.text()
    assert not dialog.save_button.isEnabled()
    type_into(qtbot, dialog.site_form.edits["name"], "aws-use1")
    type_into(qtbot, dialog.site_form.edits["provider"], "aws")
    type_into(qtbot, dialog.site_form.edits["timeout_s"], "2.5")
    assert dialog.problems == []

    qtbot.mouseClick(dialog.add_node_button, Qt.MouseButton.LeftButton)
    assert dialog.node_form.site_combo.currentText() == "aws-use1"
    assert dialog.node_form.problems_label.text() == "nodes[0].sources: at least one source is required"
    type_into(qtbot, dialog.node_form.edits["name"], "p5-017")
    type_into(qtbot, dialog.node_form.edits["tags"], "h100, train")

    qtbot.mouseClick(dialog.add_source_button, Qt.MouseButton.LeftButton)
    form = dialog.source_form
    assert form.kind_combo.currentText() == "dcgm"
    assert "nodes[0].sources[0].url: must not be empty" in form.problems_label.text()
    assert "must not be empty" in form.edits["url"].toolTip()  # the field itself is marked
    type_into(qtbot, form.edits["url"], f"127.0.0.1:{exporter.port}/metrics")
    assert form.problems_label.text() == "nodes[0].sources[0].url: must start with http:// or https://"
    type_into(qtbot, form.edits["url"], f"http://127.0.0.1:{exporter.port}/metrics")
    assert dialog.problems == []
    assert not form.problems_label.isVisible()

    qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
    assert form.test_button.text() == TESTING_TEXT
    assert not form.test_button.isEnabled()
    qtbot.waitUntil(lambda: form.test_result.text().startswith("OK: 1 GPU in "), timeout=10_000)
    assert form.test_button.isEnabled()
    assert form.test_result.textFormat() == Qt.TextFormat.PlainText

    type_into(qtbot, form.edits["url"], f"http://127.0.0.1:{free_port()}/metrics")
    assert form.test_result.text() == ""  # the old result no longer describes these settings
    qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: form.test_result.text().startswith("Failed: unreachable: "), timeout=10_000)
    type_into(qtbot, form.edits["url"], f"http://127.0.0.1:{exporter.port}/metrics")

    with qtbot.waitSignal(dialog.fleet_saved, timeout=5_000) as saved:
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.result() == InventoryEditor.DialogCode.Accepted
    expected = Fleet(
        sites=(Site("aws-use1", "aws", timeout_s=2.5),),
        nodes=(
            Node(
                "p5-017",
                "aws-use1",
                (SourceSpec(SourceKind.DCGM, url=f"http://127.0.0.1:{exporter.port}/metrics"),),
                tags=("h100", "train"),
            ),
        ),
        origin=str(path),
    )
    assert saved.args == [expected]
    assert load_inventory(path) == expected


def test_a_slow_target_never_blocks_the_window(qtbot: QtBot, exporter: ExporterStandIn, tmp_path: Path) -> None:
    fleet = Fleet(
        sites=(Site("lab", "onprem", timeout_s=1.0),),
        nodes=(Node("n1", "lab", (SourceSpec(SourceKind.DCGM, url=f"http://127.0.0.1:{exporter.port}/silent"),)),),
    )
    dialog = open_editor(qtbot, tmp_path / "fleet.toml", fleet)
    select(dialog, 1, 0, 0)
    form = dialog.source_form
    started = time.monotonic()
    qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
    assert time.monotonic() - started < 0.5
    assert form.test_button.text() == TESTING_TEXT
    qtbot.wait(200)  # the event loop keeps running while the probe waits
    assert form.test_button.text() == TESTING_TEXT
    qtbot.waitUntil(lambda: "Failed: timeout: no answer within 1 s" in form.test_result.text(), timeout=10_000)
    dialog.wait_for_tests()


def test_tls_verification_off_is_a_visible_warning(qtbot: QtBot, tmp_path: Path) -> None:
    fleet = Fleet(
        sites=(Site("lab", "onprem"),),
        nodes=(Node("n1", "lab", (SourceSpec(SourceKind.AGENT, url="https://n1:9401"),)),),
    )
    dialog = open_editor(qtbot, tmp_path / "fleet.toml", fleet)
    select(dialog, 1, 0, 0)
    form = dialog.source_form
    assert not form.tls_warning.isVisible()
    form.verify_tls.click()
    assert form.tls_warning.isVisible()
    assert "TLS verification is OFF" in form.tls_warning.text()
    assert "TLS verification off" in select(dialog, 1, 0, 0).text(0)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert load_inventory(tmp_path / "fleet.toml").nodes[0].sources[0].verify_tls is False


def test_edit_rename_and_remove_then_reload(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    fleet = Fleet(
        sites=(Site("old-site", "aws"), Site("spare", "gcp")),
        nodes=(
            Node("a", "old-site", (SourceSpec(SourceKind.NVML),)),
            Node(
                "b",
                "old-site",
                (SourceSpec(SourceKind.NVML), SourceSpec(SourceKind.DCGM, url="http://b:9400/")),
            ),
        ),
    )
    dialog = open_editor(qtbot, path, fleet)
    select(dialog, 0, 0)
    type_into(qtbot, dialog.site_form.edits["name"], "new-site")  # nodes follow the rename
    assert dialog.problems == []

    assert select(dialog, 1, 1).text(0) == "b @ new-site"
    select(dialog, 1, 1, 0)
    qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)  # b's nvml source
    select(dialog, 1, 0)
    qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)  # node a
    select(dialog, 0, 1)
    qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)  # site spare
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)

    assert load_inventory(path) == Fleet(
        sites=(Site("new-site", "aws"),),
        nodes=(Node("b", "new-site", (SourceSpec(SourceKind.DCGM, url="http://b:9400/"),)),),
        origin=str(path),
    )


def test_problems_show_node_text_as_plain_text_and_block_saving(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    fleet = Fleet(sites=(Site("s", "p"),), nodes=(Node("<b>x</b>", "s", (SourceSpec(SourceKind.NVML),)),))
    dialog = open_editor(qtbot, path, fleet)
    qtbot.mouseClick(dialog.add_node_button, Qt.MouseButton.LeftButton)
    type_into(qtbot, dialog.node_form.edits["name"], "<b>x</b>")
    text = dialog.node_form.problems_label.text()
    assert 'nodes[1].name: duplicate node name "<b>x</b>" (first at nodes[0])' in text.splitlines()
    assert dialog.node_form.problems_label.textFormat() == Qt.TextFormat.PlainText
    first_problem = dialog.problem_list.item(0)
    assert first_problem is not None
    assert first_problem.text().startswith("nodes[1].")
    assert not dialog.save_button.isEnabled()
    dialog.save()
    assert not path.exists()


def test_topology_is_shown_edited_and_saved(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    fleet = Fleet(
        sites=(Site("dc1", "onprem"),),
        nodes=(Node("a", "dc1", (SourceSpec(SourceKind.NVML),), topology=Topology(rack="r1", power_feed="pdu-1")),),
    )
    dialog = open_editor(qtbot, path, fleet)
    select(dialog, 1, 0)
    edits = dialog.node_form.edits
    assert (edits["rack"].text(), edits["power_feed"].text(), edits["cooling_loop"].text()) == ("r1", "pdu-1", "")
    type_into(qtbot, edits["rack"], "r2")
    type_into(qtbot, edits["cooling_loop"], "cdu-3")
    type_into(qtbot, edits["nvlink_domain"], "nvl72-04")
    type_into(qtbot, edits["power_feed"], "")  # an emptied field removes the key
    assert dialog.problems == []
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)

    saved = load_inventory(path).nodes[0].topology
    assert saved == Topology(rack="r2", cooling_loop="cdu-3", nvlink_domain="nvl72-04")


def test_a_site_selector_is_shown_edited_checked_and_saved(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    fleet = Fleet(
        sites=(Site("ord1", "coreweave", selector='{job="dcgm"}'),),
        nodes=(Node("a", "ord1", (SourceSpec(SourceKind.PROMETHEUS, url="http://prom:9090"),)),),
    )
    dialog = open_editor(qtbot, path, fleet)
    select(dialog, 0, 0)
    edit = dialog.site_form.edits["selector"]
    assert edit.text() == '{job="dcgm"}'
    type_into(qtbot, edit, "job=dcgm")
    assert any(p.startswith("sites[0].selector:") for p in dialog.problems)
    type_into(qtbot, edit, '{job="dcgm", cluster="ord1"}')
    assert dialog.problems == []
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert load_inventory(path).sites[0].selector == '{job="dcgm", cluster="ord1"}'
