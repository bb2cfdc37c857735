"""The inventory editor's form for one ``[[notify]]`` receiver: an Alertmanager or a webhook, its filters, its
credentials as references, and the *Send test* button with its result.

An Alertmanager authenticates with basic auth (a user and a password reference), a bearer token reference, or not
at all; the "Authentication" choice decides which keys the table holds, so a switch removes the other's keys and
the file never carries both. A webhook's only secret is its HMAC signing key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QLabel, QWidget

from console.config.fleet import SEVERITY_NAMES, ReceiverKind
from console.config.receivers import DEFAULT_TIMEOUT_S, RECEIVER_KEYS
from console.config.secret_refs import PASSWORD_KEYS, TOKEN_KEYS
from widgets.inventory.forms import EndpointForm

SEND_TEST_TEXT = "Send test"
AUTH_CHOICES = (("none", "none"), ("basic", "basic auth (user and password)"), ("token", "bearer token"))
_ALL_SEVERITIES = "every severity"
_SECRET_LABELS = {"secret": "Signing key from", "password": "Password from", "token": "Token from"}


def auth_of(table: Mapping[str, Any]) -> str:
    if any(key in table for key in TOKEN_KEYS):
        return "token"
    if "user" in table or any(key in table for key in PASSWORD_KEYS):
        return "basic"
    return "none"


class ReceiverForm(EndpointForm):
    reload_requested = Signal()  # the table's shape changed (authentication): show it afresh

    def __init__(self) -> None:
        super().__init__(
            {
                "name": ("Name", "optional, e.g. am-prod (shown in the status bar)"),
                "url": ("URL", "http://alertmanager:9093 or https://hooks.example.net/gpu"),
                "user": ("User", "basic auth user"),
                "ca_file": ("CA file", "optional, absolute path"),
                "timeout_s": ("Timeout (s)", f"{DEFAULT_TIMEOUT_S:g}"),
                "sites": ("Only sites", "comma separated; empty: every site"),
                "providers": ("Only providers", "comma separated; empty: every provider"),
            },
            [str(kind) for kind in ReceiverKind],
            SEND_TEST_TEXT,
        )
        self.auth_combo = QComboBox()
        for value, label in AUTH_CHOICES:
            self.auth_combo.addItem(label, value)
        self.auth_combo.currentIndexChanged.connect(self._on_auth_changed)
        self.form.insertRow(3, "Authentication", self.auth_combo)
        self.form.insertRow(5, "Secret from", self.secret_row)
        self.min_severity = QComboBox()
        self.min_severity.addItem(_ALL_SEVERITIES, None)
        for name in SEVERITY_NAMES:
            self.min_severity.addItem(f"{name} and worse", name)
        self.min_severity.currentIndexChanged.connect(self._on_min_severity_changed)
        self.form.addRow("Tell about", self.min_severity)
        self.form.addRow("", self.verify_tls)
        self.test_button.setToolTip(
            "Alertmanager: one info alert that ends in 5 minutes. Webhook: one signed test document."
        )

    def load_more(self, table: Mapping[str, Any]) -> None:
        auth = auth_of(table)
        self.auth_combo.setCurrentIndex(next(i for i, (value, _l) in enumerate(AUTH_CHOICES) if value == auth))
        self.min_severity.setCurrentIndex(max(0, self.min_severity.findData(table.get("min_severity"))))
        self.secret_row.load(table, self._secret_prefix(table))

    @staticmethod
    def _secret_prefix(table: Mapping[str, Any]) -> str:
        if table.get("kind") == ReceiverKind.WEBHOOK:
            return "secret"
        return {"basic": "password", "token": "token"}.get(auth_of(table), "")

    def update_visibility(self, table: Mapping[str, Any]) -> None:
        alertmanager = table.get("kind") == ReceiverKind.ALERTMANAGER
        self.form.setRowVisible(self.auth_combo, alertmanager)
        self.form.setRowVisible(self.edits["user"], alertmanager and self.auth_combo.currentData() == "basic")
        self.form.setRowVisible(self.secret_row, bool(self.secret_row.prefix))
        label = self.form.labelForField(self.secret_row)
        if isinstance(label, QLabel):
            label.setText(_SECRET_LABELS.get(self.secret_row.prefix, "Secret from"))
        self.tls_warning.setVisible(table.get("verify_tls", True) is False)

    def _on_auth_changed(self, _index: int) -> None:
        if self.loading:
            return
        auth = self.auth_combo.currentData()
        keep = {"none": (), "basic": ("user", *PASSWORD_KEYS), "token": TOKEN_KEYS}[auth]
        for key in ("user", *PASSWORD_KEYS, *TOKEN_KEYS):
            if key not in keep:
                self.edited.emit(key, None)
        # The chosen way is held by its keys; empty ones make the problem list ask for what is missing.
        if auth == "basic":
            self.edited.emit("user", self.edits["user"].text().strip())
        elif auth == "token":
            self.edited.emit("token_env", "")
        self.reload_requested.emit()

    def _on_min_severity_changed(self, _index: int) -> None:
        if not self.loading:
            self.edited.emit("min_severity", self.min_severity.currentData())

    def field_widgets(self) -> dict[str, QWidget]:
        return {**super().field_widgets(), "min_severity": self.min_severity}


def keys_the_kind_takes(kind: Any) -> tuple[str, ...]:
    return RECEIVER_KEYS.get(ReceiverKind(kind), ()) if kind in set(ReceiverKind) else ()
