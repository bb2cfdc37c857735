"""The fleet inventory: the issue's file shape, validation with key paths, secret references, round trip."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.config.fleet import Fleet, Node, SecretKind, SecretRef, Site, SourceKind, SourceSpec, Topology
from console.config.inventory import (
    InventoryError,
    default_inventory_path,
    dump_inventory,
    load_inventory,
    parse_inventory,
)
from console.config.secrets import SecretError, resolve_secret

ISSUE_EXAMPLE = """\
[[sites]]
name = "aws-use1"
provider = "aws"
region = "us-east-1"
interval_s = 1.0      # optional site defaults
timeout_s = 3.0

[[nodes]]
name = "p5-017"
site = "aws-use1"
  [[nodes.sources]]
  kind = "dcgm"
  url = "http://10.0.3.17:9400/metrics"
  [[nodes.sources]]
  kind = "redfish"
  url = "https://10.0.4.17"
  user = "monitor"
  password_env = "BMC_PASSWORD"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, "fleet.toml")
    return caught.value.problems


def test_the_issue_example_loads_to_the_expected_fleet() -> None:
    fleet = parse_inventory(ISSUE_EXAMPLE, "fleet.toml")
    assert fleet == Fleet(
        sites=(Site("aws-use1", "aws", "us-east-1", interval_s=1.0, timeout_s=3.0),),
        nodes=(
            Node(
                name="p5-017",
                site="aws-use1",
                sources=(
                    SourceSpec(SourceKind.DCGM, url="http://10.0.3.17:9400/metrics"),
                    SourceSpec(
                        SourceKind.REDFISH,
                        url="https://10.0.4.17",
                        user="monitor",
                        password=SecretRef(SecretKind.ENV, "BMC_PASSWORD"),
                    ),
                ),
            ),
        ),
        origin="fleet.toml",
    )
    node = fleet.nodes[0]
    assert fleet.interval_s(node) == 1.0  # the site's default applies
    assert fleet.timeout_s(node) == 3.0


def test_every_source_kind_and_option_loads(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        """
[[sites]]
name = "lab"
provider = "onprem"
[[sites]]
name = "gcp-a"
provider = "gcp"
interval_s = 5
timeout_s = 2.5

[[nodes]]
name = "gpu-01"
site = "lab"
tags = ["h100", "train"]
interval_s = 0.5
timeout_s = 1
  [[nodes.sources]]
  kind = "nvml"
  [[nodes.sources]]
  kind = "agent"
  url = "https://gpu-01:9401"
  token_file = "~/.config/gpu-console/agent.token"
  verify_tls = false
  [[nodes.sources]]
  kind = "ssh"
  host = "gpu-01.lab"
  port = 2222
  user = "ops"
  key_file = "/home/ops/.ssh/id_ed25519"
  known_hosts = "/home/ops/.ssh/known_hosts"
  [[nodes.sources]]
  kind = "redfish"
  url = "https://bmc-01/hmc"
  user = "monitor"
  password_keyring = { service = "bmc", name = "monitor@bmc-01" }
  ca_file = "/etc/ssl/bmc-ca.pem"
  [[nodes.sources]]
  kind = "prometheus"
  url = "http://prom:9090"

[[nodes]]
name = "gpu-02"
site = "gcp-a"
  [[nodes.sources]]
  kind = "agent"
  url = "http://gpu-02:9401"
  token_keyring = "gpu-02"

[[rule_overrides]]
scope = "site:lab"
rule = "gpu_hot"
key = "threshold_c"
value = 85
[[rule_overrides]]
scope = "provider:gcp"
rule = "power_cap"
key = "margin_w"
value = 12.5
""",
        encoding="utf-8",
    )
    fleet = load_inventory(path)
    assert fleet.origin == str(path)
    lab, gcp = fleet.sites
    assert (lab.interval_s, lab.timeout_s) == (1.0, 3.0)  # built-in defaults
    assert (gcp.interval_s, gcp.timeout_s) == (5.0, 2.5)
    gpu01, gpu02 = fleet.nodes
    assert gpu01.tags == ("h100", "train")
    assert (fleet.interval_s(gpu01), fleet.timeout_s(gpu01)) == (0.5, 1.0)
    assert (fleet.interval_s(gpu02), fleet.timeout_s(gpu02)) == (5.0, 2.5)
    nvml, agent, ssh, redfish, prometheus = gpu01.sources
    assert nvml == SourceSpec(SourceKind.NVML)
    assert agent.token == SecretRef(SecretKind.FILE, "~/.config/gpu-console/agent.token")
    assert agent.verify_tls is False
    assert (ssh.host, ssh.port, ssh.user, ssh.target()) == (
        "gpu-01.lab",
        2222,
        "ops",
        "ssh://ops@gpu-01.lab:2222",
    )
    assert ssh.key_file == "/home/ops/.ssh/id_ed25519"
    assert ssh.known_hosts == "/home/ops/.ssh/known_hosts"
    assert redfish.password == SecretRef(SecretKind.KEYRING, "monitor@bmc-01", service="bmc")
    assert redfish.ca_file == "/etc/ssl/bmc-ca.pem"
    assert redfish.verify_tls is True
    assert prometheus.url == "http://prom:9090"
    assert gpu02.sources[0].token == SecretRef(SecretKind.KEYRING, "gpu-02")
    assert fleet.rule_overrides == (
        ("site:lab", "gpu_hot", "threshold_c", 85.0),
        ("provider:gcp", "power_cap", "margin_w", 12.5),
    )


BROKEN = """\
colour = "blue"

[[sites]]
name = "aws-use1"
provider = "aws"
interval_s = 0
[[sites]]
name = "aws-use1"
provider = "aws"
timeout_s = -1
[[sites]]
name = "lab"

[[nodes]]
name = "n0"
site = "aws-use1"
  [[nodes.sources]]
  kind = "dcgm"
  url = "http://10.0.0.1:9400/metrics"
  host = "10.0.0.1"
[[nodes]]
name = "n1"
site = "aws-use1"
password = "hunter2"
  [[nodes.sources]]
  kind = "agent"
  url = "http://10.0.0.2:9401"
  token = "s3cret"
[[nodes]]
name = "n2"
site = "aws-use1"
  [[nodes.sources]]
  kind = "dcgm"
  url = "10.0.3.17:9400/metrics"
[[nodes]]
name = "n3"
site = "x"
  [[nodes.sources]]
  kind = "gpu-magic"
[[nodes]]
name = "n0"
site = "aws-use1"
sources = []
[[nodes]]
name = "n5"
site = "lab"
  [[nodes.sources]]
  kind = "ssh"
  port = 70000
  key_file = "keys/id_rsa"
  [[nodes.sources]]
  kind = "redfish"
  url = "https://admin:pw@bmc"
  user = "monitor"
  [[nodes.sources]]
  kind = "agent"
  url = "https://agent:9401"
  token_env = "A"
  token_file = "/run/token"
  verify_tls = "no"

[[rule_overrides]]
scope = "rack:7"
rule = "gpu_hot"
key = "threshold_c"
value = "hot"
"""


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    problems = problems_of(BROKEN)
    expected = [
        "colour: unknown key (expected one of: sites, nodes, rule_overrides, notify)",
        "sites[0].interval_s: must be > 0 seconds, not 0",
        "sites[1].timeout_s: must be > 0 seconds, not -1",
        'sites[1].name: duplicate site name "aws-use1" (first at sites[0])',
        "sites[2].provider: required",
        "nodes[0].sources[0].host: not a dcgm setting (dcgm takes: url, verify_tls, ca_file)",
        "nodes[1].password: secrets are not allowed in the inventory: use a reference "
        "(password_env, password_file or password_keyring)",
        "nodes[1].sources[0].token: secrets are not allowed in the inventory: use a reference "
        "(token_env, token_file or token_keyring)",
        "nodes[2].sources[0].url: must start with http:// or https://",
        'nodes[3].site: unknown site "x"',
        'nodes[3].sources[0].kind: unknown kind "gpu-magic" '
        "(expected one of: demo, nvml, dcgm, agent, ssh, redfish, prometheus)",
        "nodes[4].sources: at least one source is required",
        'nodes[4].name: duplicate node name "n0" (first at nodes[0])',
        "nodes[5].sources[0].host: required",
        "nodes[5].sources[0].port: must be between 1 and 65535",
        "nodes[5].sources[0].key_file: must be an absolute path or start with ~",
        "nodes[5].sources[1].url: must not contain a user name or password: use user and a password reference",
        'nodes[5].sources[1]: user "monitor" needs a password reference '
        "(password_env, password_file or password_keyring)",
        "nodes[5].sources[2]: give only one of token_env, token_file",
        "nodes[5].sources[2].verify_tls: expected true or false, got string",
        "rule_overrides[0].value: expected a finite number, got string",
        'rule_overrides[0].scope: must be "site:NAME" or "provider:NAME"',
    ]
    assert sorted(problems) == sorted(expected)


def test_the_error_message_lists_every_problem_under_the_file_name() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(BROKEN, "/etc/gpu-console/fleet.toml")
    message = str(caught.value)
    assert message.startswith("/etc/gpu-console/fleet.toml: 22 problems:")
    assert "\n  - nodes[2].sources[0].url: must start with http:// or https://" in message


def test_a_toml_syntax_error_names_line_and_column() -> None:
    text = '[[sites]]\nname = "a"\nprovider = aws\n'
    assert problems_of(text) == ["line 3, column 12: TOML syntax error: Invalid value"]
    assert problems_of('[[sites]]\nname = "a"\ntags = ["x"') == [
        "line 3 (end of file): TOML syntax error: Unclosed array"
    ]


def test_type_errors_name_the_expected_type() -> None:
    problems = problems_of(
        """
sites = "aws"
[[nodes]]
name = 17
site = ""
tags = "gpu"
timeout_s = true
  [[nodes.sources]]
  kind = "redfish"
  url = "https://bmc:notaport"
  password_env = "BMC PASSWORD"
"""
    )
    assert sorted(problems) == sorted(
        [
            "sites: expected an array of tables ([[sites]]), got string",
            "nodes[0].name: expected a string, got integer",
            "nodes[0].site: must not be empty",
            "nodes[0].tags: expected an array of strings, got string",
            "nodes[0].timeout_s: expected a number of seconds, got boolean",
            "nodes[0].sources[0].url: has an invalid port",
            'nodes[0].sources[0].password_env: "BMC PASSWORD" is not an environment variable name '
            "(letters, digits and _)",
            "nodes[0].sources[0].user: required when a password is given",
        ]
    )


def test_a_secret_can_only_be_given_by_reference() -> None:
    for source in (
        'kind = "redfish"\nurl = "https://bmc"\nuser = "root"\npassword = "calvin"',
        'kind = "agent"\nurl = "http://n:9401"\ntoken = "abc123"',
    ):
        problems = problems_of(
            f'[[sites]]\nname = "s"\nprovider = "p"\n[[nodes]]\nname = "n"\nsite = "s"\n[[nodes.sources]]\n{source}\n'
        )
        assert len(problems) == 1
        assert "secrets are not allowed in the inventory: use a reference" in problems[0]
        assert "calvin" not in problems[0]  # never echo the secret
        assert "abc123" not in problems[0]


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in a dict, so the test never touches the real system keyring."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.secrets[(service, username)]


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


def test_secret_references_resolve_from_env_file_and_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    token_file = tmp_path / "agent.token"
    token_file.write_text("file-token\n", encoding="utf-8")
    fleet = parse_inventory(
        f"""
[[sites]]
name = "s"
provider = "p"
[[nodes]]
name = "a"
site = "s"
  [[nodes.sources]]
  kind = "redfish"
  url = "https://bmc-a"
  user = "monitor"
  password_env = "BMC_A_PASSWORD"
  [[nodes.sources]]
  kind = "agent"
  url = "http://a:9401"
  token_file = "{token_file}"
[[nodes]]
name = "b"
site = "s"
  [[nodes.sources]]
  kind = "redfish"
  url = "https://bmc-b"
  user = "monitor"
  password_keyring = "bmc-b"
  [[nodes.sources]]
  kind = "agent"
  url = "http://b:9401"
  token_keyring = {{ service = "agents", name = "b" }}
"""
    )
    redfish_a, agent_a = fleet.nodes[0].sources
    redfish_b, agent_b = fleet.nodes[1].sources
    assert redfish_a.password is not None
    assert agent_a.token is not None
    assert redfish_b.password is not None
    assert agent_b.token is not None

    with pytest.raises(SecretError, match="environment variable BMC_A_PASSWORD is not set"):
        resolve_secret(redfish_a.password)
    monkeypatch.setenv("BMC_A_PASSWORD", "env-password")
    assert resolve_secret(redfish_a.password) == "env-password"
    assert resolve_secret(agent_a.token) == "file-token"

    with pytest.raises(SecretError, match="no secret stored in the system keyring for keyring:gpu-ops-console/bmc-b"):
        resolve_secret(redfish_b.password)
    memory_keyring.set_password("gpu-ops-console", "bmc-b", "keyring-password")
    memory_keyring.set_password("agents", "b", "keyring-token")
    assert resolve_secret(redfish_b.password) == "keyring-password"
    assert resolve_secret(agent_b.token) == "keyring-token"


RICH_FLEET = Fleet(
    sites=(
        Site("aws-use1", "aws", "us-east-1", interval_s=1.0, timeout_s=3.0),
        Site('lab "B"\\2', "on-prem", interval_s=0.25, timeout_s=10.0, demo=True),
    ),
    nodes=(
        Node(
            name="p5-017",
            site="aws-use1",
            tags=("h100", "näive tag", "with, comma"),
            sources=(
                SourceSpec(SourceKind.DCGM, url="http://10.0.3.17:9400/metrics"),
                SourceSpec(
                    SourceKind.REDFISH,
                    url="https://10.0.4.17/hmc",
                    user="monitor",
                    password=SecretRef(SecretKind.KEYRING, "bmc-17", service="bmc"),
                    verify_tls=False,
                    ca_file="/etc/ssl/bmc.pem",
                ),
                SourceSpec(SourceKind.AGENT, url="https://p5-017:9401", token=SecretRef(SecretKind.ENV, "TOKEN")),
            ),
        ),
        Node(
            name="lab-01",
            site='lab "B"\\2',
            interval_s=2.0,
            timeout_s=0.5,
            sources=(
                SourceSpec(
                    SourceKind.SSH,
                    host="10.1.0.5",
                    port=2222,
                    user="ops",
                    key_file="~/.ssh/id_ed25519",
                    known_hosts="/etc/ssh/ssh_known_hosts",
                ),
                SourceSpec(SourceKind.NVML),
                SourceSpec(SourceKind.DEMO, options=(("profile", "h100-8x"), ("seed", "7"))),
                SourceSpec(SourceKind.PROMETHEUS, url="http://prom:9090", token=None),
            ),
        ),
    ),
    origin="fleet.toml",
    rule_overrides=(
        ("provider:aws", "gpu_hot", "threshold_c", 83.5),
        ("site:aws-use1", "xid", "window_s", 600.0),
    ),
)


def test_dump_then_parse_gives_back_an_equal_fleet(tmp_path: Path) -> None:
    text = dump_inventory(RICH_FLEET)
    assert parse_inventory(text, "fleet.toml") == RICH_FLEET
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    assert load_inventory(path) == dataclasses.replace(RICH_FLEET, origin=str(path))


def test_dump_writes_references_never_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "do-not-write-me")
    text = dump_inventory(RICH_FLEET)
    assert "do-not-write-me" not in text
    assert 'token_env = "TOKEN"' in text
    assert 'password_keyring = { service = "bmc", name = "bmc-17" }' in text
    assert "\npassword =" not in text
    assert "\ntoken =" not in text


def test_dump_of_the_issue_example_round_trips() -> None:
    fleet = parse_inventory(ISSUE_EXAMPLE, "fleet.toml")
    assert parse_inventory(dump_inventory(fleet), "fleet.toml") == fleet


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and s.strip() != ""
)


@settings(max_examples=60, deadline=None)
@given(site_name=names, node_name=names, tag=names, region=names)
def test_any_printable_or_control_text_survives_the_round_trip(
    site_name: str, node_name: str, tag: str, region: str
) -> None:
    fleet = Fleet(
        sites=(Site(site_name, "p", region),),
        nodes=(Node(node_name, site_name, (SourceSpec(SourceKind.NVML),), tags=(tag,)),),
        origin="x",
    )
    assert parse_inventory(dump_inventory(fleet), "x") == fleet


def test_an_empty_file_is_an_empty_fleet() -> None:
    assert parse_inventory("", "empty.toml") == Fleet(sites=(), nodes=(), origin="empty.toml")


def test_a_missing_or_unreadable_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "nope.toml")
    assert caught.value.problems == ["file: does not exist"]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = \xff\xfe")
    with pytest.raises(InventoryError) as caught:
        load_inventory(binary)
    assert caught.value.problems[0].startswith("file: not UTF-8 text")


def test_the_default_path_is_in_the_user_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_inventory_path() == tmp_path / "gpu-ops-console" / "fleet.toml"


def test_the_readme_example_inventory_loads() -> None:
    """The README shows operators an inventory to copy; it must stay valid."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", readme, re.S)
    assert block is not None
    fleet = parse_inventory(block.group(1), "README.md")
    kinds = {spec.kind for node in fleet.nodes for spec in node.sources}
    assert {str(k) for k in kinds} == {"dcgm", "redfish", "agent", "ssh"}
    assert fleet.rule_overrides == (("provider:aws", "inlet_temperature", "warning", 32.0),)


TOPOLOGY_FLEET = """
[[sites]]
name = "ord1"
provider = "coreweave"

[[nodes]]
name = "gpu-001"
site = "ord1"
rack = "R01"
cooling_loop = "loop-a"
power_feed = "PDU-A1"
nvlink_domain = "nvl72-a"
  [[nodes.sources]]
  kind = "dcgm"
  url = "http://10.0.3.17:9400/metrics"

[[nodes]]
name = "gpu-002"
site = "ord1"
rack = 7
cooling_loop = ""
  [[nodes.sources]]
  kind = "dcgm"
  url = "http://10.0.3.18:9400/metrics"
"""


def test_a_node_carries_its_topology_and_it_survives_a_save() -> None:
    valid = TOPOLOGY_FLEET.split('[[nodes]]\nname = "gpu-002"', maxsplit=1)[0]
    fleet = parse_inventory(valid)
    assert fleet.nodes[0].topology == Topology("R01", "loop-a", "PDU-A1", "nvl72-a")
    again = parse_inventory(dump_inventory(fleet))
    assert again.nodes[0].topology == fleet.nodes[0].topology


def test_topology_keys_of_the_wrong_type_are_reported_with_their_path() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(TOPOLOGY_FLEET, "fleet.toml")
    assert "nodes[1].rack: expected a string, got integer" in caught.value.problems
    assert "nodes[1].cooling_loop: must not be empty" in caught.value.problems


SELECTOR_FLEET = """
[[sites]]
name = "ord1"
provider = "coreweave"
selector = '{job="dcgm", cluster="ord1"}'

[[sites]]
name = "iad1"
provider = "coreweave"
selector = 'job="dcgm"'

[[nodes]]
name = "n1"
site = "ord1"
sources = [{ kind = "prometheus", url = "http://prometheus:9090" }]
"""


def test_a_site_selector_loads_survives_a_save_and_a_malformed_one_is_reported() -> None:
    problems = problems_of(SELECTOR_FLEET)
    assert problems == [
        "sites[1].selector: must be PromQL label matchers in braces, e.g. '{job=\"dcgm\"}', got 'job=\"dcgm\"'"
    ]
    text = SELECTOR_FLEET.replace("selector = 'job=\"dcgm\"'", "")
    fleet = parse_inventory(text, "fleet.toml")
    assert fleet.site("ord1").selector == '{job="dcgm", cluster="ord1"}'
    assert fleet.site("iad1").selector == ""
    assert parse_inventory(dump_inventory(fleet), "fleet.toml") == fleet
