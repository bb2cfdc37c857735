"""The inventory editor's receivers (issue 15): add an Alertmanager or a webhook, edit its filters and credentials
(references only), Send test against a real loopback server off the GUI thread, save, and read the file back."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QTreeWidgetItem
from pytestqt.qtbot import QtBot

from console.config.fleet import (
    Fleet,
    Node,
    Receiver,
    ReceiverKind,
    SecretKind,
    SecretRef,
    Site,
    SourceKind,
    SourceSpec,
)
from console.config.inventory import load_inventory
from console.notify.alerts import verify_signature
from tests.helpers.alertmanager_server import Recorder
from tests.helpers.qt_input import type_into
from widgets.inventory.editor import InventoryEditor
from widgets.inventory.forms import TESTING_TEXT

pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")

SECRET = "editor-hook-secret"
SECRET_ENV = "GPU_CONSOLE_TEST_EDITOR_HOOK_SECRET"
RECEIVERS = 2  # the tree's group of receivers, after Sites and Nodes


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


def base_fleet(*receivers: Receiver) -> Fleet:
    return Fleet(
        sites=(Site("ord1", "coreweave"), Site("dgx", "onprem")),
        nodes=(Node("n1", "ord1", (SourceSpec(SourceKind.NVML),)),),
        receivers=receivers,
    )


def open_editor(qtbot: QtBot, path: Path, fleet: Fleet) -> InventoryEditor:
    dialog = InventoryEditor(fleet, path)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def choose(combo: QComboBox, data: object) -> None:
    index = combo.findData(data)
    assert index >= 0, data
    combo.setCurrentIndex(index)


def receiver_item(dialog: InventoryEditor, index: int) -> QTreeWidgetItem:
    group = dialog.tree.topLevelItem(RECEIVERS)
    assert group is not None and group.text(0) == "Receivers"
    item = group.child(index)
    assert item is not None
    dialog.tree.setCurrentItem(item)
    return item


def test_add_a_signed_webhook_send_a_test_and_save(
    qtbot: QtBot, hook: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    path = tmp_path / "fleet.toml"
    dialog = open_editor(qtbot, path, base_fleet())
    qtbot.mouseClick(dialog.add_receiver_button, Qt.MouseButton.LeftButton)
    form = dialog.receiver_form
    assert dialog.stack.currentWidget() is form
    assert "notify[0].url: must not be empty" in form.problems_label.text()
    assert not dialog.save_button.isEnabled()

    form.kind_combo.setCurrentText("webhook")
    assert not form.auth_combo.isVisible()  # a webhook's only secret is its signing key
    assert form.form.labelForField(form.secret_row).text() == "Signing key from"  # type: ignore[union-attr]
    type_into(qtbot, form.edits["name"], "chat")
    type_into(qtbot, form.edits["url"], hook.url())
    choose(form.secret_row.kind, "env")
    type_into(qtbot, form.secret_row.name, SECRET_ENV)
    choose(form.min_severity, "major")
    type_into(qtbot, form.edits["sites"], "ord1")
    assert dialog.problems == []
    assert receiver_item(dialog, 0).text(0) == "webhook chat"

    qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: form.test_result.text().startswith("OK: chat accepted a signed test document"), timeout=10_000
    )
    (received,) = hook.received()
    headers = received.headers
    assert verify_signature(
        SECRET, headers["X-GPU-Console-Timestamp"], received.body, headers["X-GPU-Console-Signature"]
    )
    dialog.wait_for_tests()

    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert load_inventory(path).receivers == (
        Receiver(
            ReceiverKind.WEBHOOK,
            hook.url(),
            name="chat",
            secret=SecretRef(SecretKind.ENV, SECRET_ENV),
            min_severity="major",
            sites=("ord1",),
        ),
    )
    assert SECRET not in path.read_text()


def test_alertmanager_authentication_holds_one_way_at_a_time(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    dialog = open_editor(qtbot, path, base_fleet())
    qtbot.mouseClick(dialog.add_receiver_button, Qt.MouseButton.LeftButton)
    form = dialog.receiver_form
    type_into(qtbot, form.edits["url"], "http://127.0.0.1:9093")
    assert dialog.problems == [] and form.auth_combo.isVisible()
    assert not form.secret_row.isVisible()

    choose(form.auth_combo, "basic")
    assert form.edits["user"].isVisible() and form.secret_row.isVisible()
    assert "notify[0].user: must not be empty" in form.problems_label.text()
    type_into(qtbot, form.edits["user"], "console")
    assert any('user "console" needs a password reference' in p for p in dialog.problems)
    choose(form.secret_row.kind, "file")
    type_into(qtbot, form.secret_row.name, "/etc/gpu-console/am.pass")
    assert dialog.problems == []

    choose(form.auth_combo, "token")  # switching drops the user and the password reference
    assert not form.edits["user"].isVisible()
    assert form.form.labelForField(form.secret_row).text() == "Token from"  # type: ignore[union-attr]
    assert "notify[0].token_env: must not be empty" in form.problems_label.text()
    type_into(qtbot, form.secret_row.name, "AM_TOKEN")
    assert dialog.problems == []
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    (saved,) = load_inventory(path).receivers
    assert (saved.user, saved.password, saved.token) == (None, None, SecretRef(SecretKind.ENV, "AM_TOKEN"))


def test_send_test_says_what_went_wrong(qtbot: QtBot, hook: Recorder, tmp_path: Path) -> None:
    hook.answer = 500
    fleet = base_fleet(Receiver(ReceiverKind.WEBHOOK, hook.url(), name="chat", timeout_s=2.0))
    dialog = open_editor(qtbot, tmp_path / "fleet.toml", fleet)
    receiver_item(dialog, 0)
    form = dialog.receiver_form
    qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: form.test_result.text().startswith("Failed: chat refused the request: HTTP 500"), timeout=10_000
    )

    type_into(qtbot, form.edits["url"], "")
    assert form.test_result.text() == ""  # the old result no longer describes these settings
    qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
    assert form.test_result.text() == "Cannot send: notify[0].url: required"
    dialog.wait_for_tests()


def test_a_silent_receiver_never_blocks_the_window(qtbot: QtBot, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        fleet = base_fleet(Receiver(ReceiverKind.ALERTMANAGER, url, name="am", timeout_s=1.0))
        dialog = open_editor(qtbot, tmp_path / "fleet.toml", fleet)
        receiver_item(dialog, 0)
        form = dialog.receiver_form
        started = time.monotonic()
        qtbot.mouseClick(form.test_button, Qt.MouseButton.LeftButton)
        assert time.monotonic() - started < 0.5
        assert form.test_button.text() == TESTING_TEXT and not form.test_button.isEnabled()
        qtbot.wait(200)  # the event loop keeps running while the test send waits
        assert form.test_button.text() == TESTING_TEXT
        qtbot.waitUntil(lambda: "Failed: am did not answer within 1 s" in form.test_result.text(), timeout=10_000)
        assert form.test_button.text() == "Send test"
        dialog.wait_for_tests()


def test_receivers_of_a_file_are_listed_edited_and_removed(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    fleet = base_fleet(
        Receiver(ReceiverKind.ALERTMANAGER, "http://am-a:9093", name="am-a", verify_tls=False),
        Receiver(ReceiverKind.WEBHOOK, "http://hook", providers=("onprem",)),
    )
    dialog = open_editor(qtbot, path, fleet)
    first = receiver_item(dialog, 0)
    assert first.text(0) == "alertmanager am-a  \u26a0 TLS verification off"
    assert dialog.receiver_form.tls_warning.isVisible()
    second = receiver_item(dialog, 1)
    assert second.text(0) == "webhook http://hook"
    assert dialog.receiver_form.edits["providers"].text() == "onprem"
    type_into(qtbot, dialog.receiver_form.edits["providers"], "aws")  # no site has that provider
    assert dialog.receiver_form.problems_label.text() == 'notify[1].providers[0]: unknown provider "aws"'
    assert second.foreground(0).color().name() == "#c62828"
    type_into(qtbot, dialog.receiver_form.edits["providers"], "")

    receiver_item(dialog, 0)
    qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert load_inventory(path).receivers == (Receiver(ReceiverKind.WEBHOOK, "http://hook"),)
