"""Rules as data: loading, validation errors, overrides, the Xid catalog, and every built-in rule on a trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.incidents.engine import IncidentEngine
from console.incidents.model import Severity
from console.incidents.rules import DEFAULT_RULES_PATH, RuleError, load_rules
from console.incidents.xid import CatalogError, load_xid_catalog
from tests.helpers.traces import PROVIDER, SITE, T0, VICTIM, build_trace, make_fleet, opened, replace, run, victim
from tests.helpers.traces.faults import FAULT_TRACES

RULES = load_rules()
RULE_IDS = [rule.id for rule in RULES.rules]
CATALOG = load_xid_catalog()


def _engine(overrides: tuple[tuple[str, str, str, float], ...] = (), **fleet_args: object) -> IncidentEngine:
    fleet = make_fleet(overrides=overrides, **fleet_args)  # type: ignore[arg-type]
    return IncidentEngine(load_rules(overrides=fleet.rule_overrides), fleet, clock=lambda: T0, xid_catalog=CATALOG)


@pytest.fixture(scope="module")
def healthy_openings() -> list[str]:
    # 1,300 s: three load/idle cycles, and long enough for the coolant delta-T baseline to warm up.
    changes = run(_engine(), build_trace(1300))
    return [change.incident.rule for change in opened(changes)]


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_every_rule_fires_on_its_fault_trace(rule_id: str) -> None:
    fault = FAULT_TRACES.get(rule_id)
    assert fault is not None, f"rule {rule_id!r} has no fault trace in tests/traces/faults.py"
    changes = run(_engine(), fault.trace())
    fired = opened(changes, rule_id)
    assert fired, f"{rule_id} did not open an incident on its trace"
    incident = fired[0].incident
    assert incident.context.gpu_index == fault.gpu_index
    assert incident.title and incident.recommended_action
    assert not [c for c in opened(changes) if c.incident.rule != rule_id], "other rules fired on a one-fault trace"


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_every_rule_stays_silent_on_a_healthy_trace(rule_id: str, healthy_openings: list[str]) -> None:
    assert rule_id not in healthy_openings


def test_fault_traces_name_only_real_rules() -> None:
    assert set(FAULT_TRACES) <= set(RULE_IDS)


def test_default_rules_cover_the_reference_rules() -> None:
    kinds = {rule.kind for rule in RULES.rules}
    for needed in ("xid", "gpu_lost", "throttle", "thermal_margin", "unreachable", "stale", "cohort_hotter"):
        assert needed in kinds
    assert RULES.rule("thermal_margin").thresholds == ((Severity.CRITICAL, 0.0), (Severity.WARNING, 5.0))
    assert RULES.rule("xid").clear_s == 180.0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def test_load_errors_name_file_rule_and_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[[rules]]
id = "too_hot"
kind = "chassis_level"
category = "cooling"
signal = "inlet_c"
direction = "above"
thresholds = { warning = 40.0, critical = 35.0 }
title = "hot {nonsense}"
colour = "red"

[[rules]]
id = "mystery"
kind = "no_such_detector"
category = "x"
title = "t"

[[rules]]
id = "hbm"
kind = "hbm_margin"
category = "thermal"
direction = "below"
thresholds = { warning = 5.0 }
for_s = -1
title = "t"
""",
    )
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    problems = caught.value.problems
    assert all(str(path) in p for p in problems)
    text = "\n".join(problems)
    assert "(too_hot).thresholds: worse severities" in text
    assert "(too_hot).title: unknown placeholder {nonsense}" in text
    assert "(too_hot).colour: unknown key" in text
    assert "(mystery).kind: unknown detector 'no_such_detector'" in text
    assert "(hbm).params.default_max_c: missing" in text
    assert "(hbm).for_s: must be >= 0" in text


def test_bad_signal_and_bad_toml_are_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[rules]]\nid = "r"\nkind = "throttle"\ncategory = "thermal"\nsignal = "too_warm"\ntitle = "t"\n',
    )
    with pytest.raises(RuleError, match=r"\(r\)\.signal: 'too_warm' is not a throttle reason"):
        load_rules(path)
    broken = _write(tmp_path, "[[rules]\n")
    with pytest.raises(RuleError, match="not valid TOML"):
        load_rules(broken)
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_bad_overrides_are_reported_with_their_position() -> None:
    overrides = (
        ("site:a", "thermal_margin", "warning", 8.0),
        ("rack:7", "thermal_margin", "warning", 8.0),
        ("site:a", "no_such_rule", "for_s", 1.0),
        ("provider:p", "thermal_margin", "colour", 1.0),
        ("site:a", "gpu_lost", "warning", 1.0),
    )
    with pytest.raises(RuleError) as caught:
        load_rules(overrides=overrides)
    text = "\n".join(caught.value.problems)
    assert "rule_overrides[0]" not in text
    assert "rule_overrides[1] (rack:7, thermal_margin, warning): scope must be" in text
    assert "rule_overrides[2] (site:a, no_such_rule, for_s): unknown rule" in text
    assert "rule_overrides[3] (provider:p, thermal_margin, colour): unknown key 'colour'" in text
    assert "rule_overrides[4] (site:a, gpu_lost, warning): unknown key" in text


def test_site_override_beats_provider_beats_default() -> None:
    overrides = (
        ("provider:cloud", "thermal_margin", "warning", 10.0),
        ("site:strict", "thermal_margin", "warning", 12.0),
        ("site:strict", "thermal_margin", "for_s", 0.0),
        ("site:lenient", "thermal_margin", "warning", 3.0),
    )
    engine = _engine(
        overrides,
        nodes=(("n-default", "plain"), ("n-provider", "cloud-east"), ("n-strict", "strict"), ("n-lenient", "lenient")),
        sites=(("plain", PROVIDER), ("cloud-east", "cloud"), ("strict", "cloud"), ("lenient", "cloud")),
    )
    margin_8 = victim(replace(thermal_margin_c=8.0), from_step=0)
    changes = []
    for node, site in (
        ("n-default", "plain"),
        ("n-provider", "cloud-east"),
        ("n-strict", "strict"),
        ("n-lenient", "lenient"),
    ):
        changes += run(engine, build_trace(30, node=node, site=site, gpu_fault=margin_8))
    fired = {c.incident.context.node: c.time - T0 for c in opened(changes, "thermal_margin")}
    # 8 C: above the default 5 C and the lenient site's 3 C; within the provider's 10 C and the strict site's 12 C.
    assert set(fired) == {"n-provider", "n-strict"}
    assert fired["n-strict"] == 0.0  # the site's for_s = 0 applies
    assert fired["n-provider"] == 10.0  # the default for_s still applies


def test_an_override_can_disable_a_rule_for_a_site() -> None:
    engine = _engine((("site:" + SITE, "row_remap_pending", "enabled", 0.0),))
    changes = run(engine, build_trace(40, gpu_fault=victim(replace(remapped_rows_pending=True))))
    assert not opened(changes)


def test_xid_catalog_joins_nvidia_csv_and_console_table() -> None:
    assert len(CATALOG.entries) >= 172
    gr = CATALOG.get(13)
    assert gr is not None
    assert gr.mnemonic == "ROBUST_CHANNEL_GR_EXCEPTION / ROBUST_CHANNEL_GR_ERROR_SW_NOTIFY"  # a cell with a newline
    assert gr.immediate_bucket == "RESTART_APP" and gr.severity is Severity.MAJOR
    lost = CATALOG.get(79)
    assert lost is not None and lost.severity is Severity.CRITICAL and lost.immediate_bucket == "RESTART_BM"
    assert "reboot" in lost.action
    assert CATALOG.get(43).severity is Severity.INFO  # type: ignore[union-attr]
    assert CATALOG.get(63).severity is Severity.WARNING  # type: ignore[union-attr]
    cleanup = CATALOG.get(45)
    assert cleanup is not None and cleanup.annotates_previous
    assert "Solo: RESTART_FM Not Solo" in cleanup.investigatory_bucket
    netir = CATALOG.get(149)
    assert netir is not None
    assert netir.severity_for("NETIR_LINK_EVT  Fatal   XC0 i0 Link 01") is Severity.CRITICAL
    assert netir.severity_for("NETIR_LINK_EVT  Nonfatal XC0 i0 Link 01") is Severity.WARNING
    unused = CATALOG.get(1)
    assert unused is not None and unused.unused and unused.severity is Severity.WARNING
    assert CATALOG.get(100000) is None


def test_xid_catalog_errors_name_the_file_and_row(tmp_path: Path) -> None:
    csv_path = tmp_path / "xid.csv"
    csv_path.write_text(
        'code,mnemonic,description,immediate_resolution_bucket\n79,LOST,"fallen\noff",RESTART_BM\nx,A,B,C\n'
    )
    with pytest.raises(CatalogError, match=r"xid.csv: line 4: code: expected a number, got 'x'"):
        load_xid_catalog(csv_path)
    table = tmp_path / "table.toml"
    table.write_text('[xid.79]\nseverity = "dire"\n')
    csv_path.write_text("code,mnemonic,description,immediate_resolution_bucket\n79,LOST,lost,RESTART_BM\n")
    with pytest.raises(CatalogError, match=r"table.toml: xid.79.severity: unknown severity 'dire'"):
        load_xid_catalog(csv_path, table)


def test_default_rules_file_is_the_packaged_one() -> None:
    assert DEFAULT_RULES_PATH.name == "default.toml" and DEFAULT_RULES_PATH.is_file()
    assert RULES.origin == str(DEFAULT_RULES_PATH)
    assert VICTIM == 2
