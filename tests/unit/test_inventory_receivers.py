"""The inventory's [[notify]] receivers (issue 15): read, validated with every problem at once and its key path,
secrets as references only, and written back to a file that reads as the same receivers."""

from __future__ import annotations

import pytest

from console.config.fleet import Receiver, ReceiverKind, SecretKind, SecretRef
from console.config.inventory import (
    InventoryError,
    dump_inventory,
    parse_inventory,
    receiver_from_document,
)

FLEET = """
[[sites]]
name = "ord1"
provider = "coreweave"

[[sites]]
name = "dgx"
provider = "onprem"

[[nodes]]
name = "n1"
site = "ord1"
  [[nodes.sources]]
  kind = "dcgm"
  url = "http://127.0.0.1:9400/metrics"
"""


def problems_of(notify: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(FLEET + notify)
    return caught.value.problems


def test_both_kinds_with_every_setting_round_trip() -> None:
    fleet = parse_inventory(
        FLEET
        + """
[[notify]]
kind = "alertmanager"
name = "am-prod"
url = "https://am.example.net:9093"
user = "console"
password_file = "/etc/gpu-console/am.pass"
ca_file = "/etc/ssl/am-ca.pem"
timeout_s = 4.5
min_severity = "major"
sites = ["ord1"]

[[notify]]
kind = "webhook"
url = "https://chat.example.net/hooks/gpu"
secret_env = "CHAT_HOOK_KEY"
verify_tls = false
providers = ["onprem"]
"""
    )
    am, hook = fleet.receivers
    assert am == Receiver(
        ReceiverKind.ALERTMANAGER,
        "https://am.example.net:9093",
        name="am-prod",
        user="console",
        password=SecretRef(SecretKind.FILE, "/etc/gpu-console/am.pass"),
        ca_file="/etc/ssl/am-ca.pem",
        timeout_s=4.5,
        min_severity="major",
        sites=("ord1",),
    )
    assert hook.kind is ReceiverKind.WEBHOOK
    assert hook.secret == SecretRef(SecretKind.ENV, "CHAT_HOOK_KEY")
    assert hook.verify_tls is False
    assert hook.providers == ("onprem",)

    written = dump_inventory(fleet)
    assert "CHAT_HOOK_KEY" in written and "[[notify]]" in written
    assert parse_inventory(written).receivers == fleet.receivers


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    problems = problems_of(
        """
[[notify]]
kind = "alertmanager"
url = "ftp://am"
min_severity = "urgent"
sites = ["nowhere"]
providers = ["aws"]
user = "ops"

[[notify]]
kind = "webhook"
url = "http://hook"
secret = "hunter2"
colour = "red"

[[notify]]
kind = "pagerduty"
url = "http://pd"
"""
    )
    assert "notify[0].url: must start with http:// or https://" in problems
    assert 'notify[0].min_severity: unknown severity "urgent" (info, warning, major, critical)' in problems
    assert 'notify[0].sites[0]: unknown site "nowhere"' in problems
    assert 'notify[0].providers[0]: unknown provider "aws"' in problems
    assert any(p.startswith('notify[0]: user "ops" needs a password reference') for p in problems)
    assert any(p.startswith("notify[1].secret: secrets are not allowed in the inventory") for p in problems)
    assert any(p.startswith("notify[1].colour: unknown key") for p in problems)
    assert any(p.startswith('notify[2].kind: unknown kind "pagerduty"') for p in problems)
    assert not any("hunter2" in p for p in problems)  # a literal secret is refused without being repeated


def test_literal_password_and_token_are_refused() -> None:
    problems = problems_of(
        """
[[notify]]
kind = "alertmanager"
url = "http://am:9093"
user = "ops"
password = "s3cret"

[[notify]]
kind = "alertmanager"
url = "http://am2:9093"
token = "abc"
"""
    )
    assert any(p.startswith("notify[0].password: secrets are not allowed") for p in problems)
    assert any(p.startswith("notify[1].token: secrets are not allowed") for p in problems)


def test_basic_auth_and_a_token_together_are_refused() -> None:
    problems = problems_of(
        """
[[notify]]
kind = "alertmanager"
url = "http://am:9093"
user = "ops"
password_env = "AM_PASS"
token_env = "AM_TOKEN"
"""
    )
    assert problems == [
        "notify[0]: give either basic auth (user and a password reference) or a token reference, not both"
    ]


def test_settings_of_the_other_kind_are_named_as_such() -> None:
    problems = problems_of(
        """
[[notify]]
kind = "webhook"
url = "http://hook"
user = "ops"
"""
    )
    assert len(problems) == 1 and problems[0].startswith("notify[0].user: not a webhook setting")


def test_duplicate_receivers_are_refused() -> None:
    problems = problems_of(
        """
[[notify]]
kind = "webhook"
name = "chat"
url = "http://hook-a"

[[notify]]
kind = "webhook"
name = "chat"
url = "http://hook-b"
"""
    )
    assert problems == ['notify[1].name: duplicate receiver "chat" (first at notify[0])']


def test_one_table_alone_is_read_with_its_own_place() -> None:
    receiver = receiver_from_document({"kind": "webhook", "url": "http://hook"}, "notify[3]", (), ())
    assert receiver.url == "http://hook"
    with pytest.raises(InventoryError) as caught:
        receiver_from_document({"kind": "webhook", "url": ""}, "notify[3]", (), ())
    assert caught.value.problems == ["notify[3].url: must not be empty"]
