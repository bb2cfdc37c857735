"""Property-based tests of every parser that reads what a node (or an operator's file) sends: any input gives a
result or the parser's own clean error, never another exception. Inputs are built near the real formats (real
metric names, real CSV columns, real Redfish keys, real inventory keys) so the parsers' deep paths get exercised,
not only their first check."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.config.fleet import Fleet
from console.config.inventory import InventoryError, dump_document, fleet_from_document, parse_inventory
from console.samples.codec import sample_from_json, sample_to_json
from console.samples.results import SourceError
from console.samples.schema import NodeSample, SchemaError
from console.sources.dcgm import names as dcgm_names
from console.sources.dcgm.mapping import XidMemory
from console.sources.dcgm.source import parse_dcgm_payload
from console.sources.exposition import ExpositionError, parse_exposition
from console.sources.redfish.choosing import chassis_from_leaves
from console.sources.redfish.readings import Leaf, LeafKind
from console.sources.ssh.nvidia_smi import QUERY_FIELDS, NvidiaSmiParseError, QueryResult, parse_query_output
from tests.helpers.hostile_server import realistic_sample, render

# bounded: the whole file runs in well under 20 s on a shared 2-core machine
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(FUZZ, max_examples=50)  # nested JSON costs more to generate than to parse
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _has_reason(*reasons: str) -> None:
    """A clean error says what was wrong: at least one non-empty reason."""
    assert reasons, "an error without a reason"
    assert all(isinstance(reason, str) and reason.strip() for reason in reasons), reasons


# --- exposition text and the DCGM mapping --------------------------------------------------------------------

METRIC_NAMES = sorted(dcgm_names.FIELD_BY_NAME)[:60] + sorted(dcgm_names.XID_GAUGE_NAMES) + ["up", "9bad", ""]
LABEL_NAMES = ["gpu", "UUID", "uuid", "modelName", "Hostname", "GPU_I_ID", "err_code", "err_msg", "xid", "1x", ""]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "0x10", "1_000", "٣", "", "hot", "2147483632", "9.2e18"]),
)
LABEL_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["GPU-a", "GPU-b", "0", "1", "7", '\\"', "\\n", "\\", "<b>x</b>", "9999999"]),
)


@st.composite
def exposition_line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=40))
    if kind == 1:
        keyword = draw(st.sampled_from(["HELP", "TYPE", "", "EOF"]))
        return f"# {keyword} {draw(st.sampled_from(METRIC_NAMES))} {draw(st.text(max_size=12))}"
    labels = draw(
        st.lists(st.tuples(st.sampled_from(LABEL_NAMES), LABEL_VALUES), max_size=5).map(
            lambda pairs: ",".join(f'{k}="{v}"' for k, v in pairs)
        )
    )
    brace = draw(st.sampled_from(["{%s}", "{%s", "%s}", "{%s}}", "{{%s}"])) if kind == 2 else "{%s}"
    line = f"{draw(st.sampled_from(METRIC_NAMES))}{brace % labels} {draw(VALUES)}"
    if draw(st.booleans()):
        line += f" {draw(st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(max_size=5)))}"
    return line


EXPOSITIONS = st.one_of(
    st.text(max_size=300),
    st.lists(exposition_line(), max_size=25).map("\n".join),
)
REAL_PAYLOAD = render(realistic_sample("fuzz", gpus=2))


@FUZZ
@given(EXPOSITIONS)
def test_exposition_parser_returns_samples_or_exposition_error(text: str) -> None:
    try:
        parsed = parse_exposition(text)
    except ExpositionError as exc:
        _has_reason(str(exc))
        return
    for name, labels, value, timestamp in parsed.samples:
        assert isinstance(name, str) and isinstance(value, float)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
        assert timestamp is None or isinstance(timestamp, int)


def _check_dcgm(text: str) -> NodeSample | None:
    try:
        sample = parse_dcgm_payload(text, "node", "site", 1_700_000_000.0, XidMemory())
    except SourceError as exc:
        _has_reason(exc.reason)
        return None
    for gpu in sample.gpus:
        for value in (gpu.temperature_c, gpu.power_w, gpu.utilization_pct, gpu.energy_j):
            assert value is None or math.isfinite(value), "NaN/Inf must become None"
    json.dumps(sample_to_json(sample))  # whatever came in, the sample serialises
    return sample


@FUZZ
@given(EXPOSITIONS)
def test_dcgm_mapping_returns_a_sample_or_source_error(text: str) -> None:
    _check_dcgm(text)


@FUZZ
@given(st.data())
def test_dcgm_mapping_survives_a_real_payload_with_lines_replaced(data: st.DataObject) -> None:
    lines = REAL_PAYLOAD.split("\n")
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(lines) - 1))
        lines[at] = data.draw(exposition_line())
    cut = data.draw(st.integers(0, 1))
    text = "\n".join(lines)
    if cut:
        text = text[: data.draw(st.integers(0, len(text)))]
    _check_dcgm(text)


# --- nvidia-smi CSV ----------------------------------------------------------------------------------------------

CSV_TOKENS = st.one_of(
    st.sampled_from(
        ["[N/A]", "[Not Supported]", "N/A", "Enabled", "Disabled", "Yes", "No", "P0", "P8", "0x0000000000000000"]
    ),
    st.sampled_from(["GPU-a", "GPU-b", "00000000:18:00.0", "NVIDIA H100 80GB HBM3", "590.48.01", "None"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**64), 2**64).map(str),
    st.text(max_size=10),
)


@st.composite
def smi_line(draw: st.DrawFn) -> str:
    count = len(QUERY_FIELDS) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    return ", ".join(draw(st.lists(CSV_TOKENS, min_size=count, max_size=count)))


@FUZZ
@given(st.one_of(st.text(max_size=300), st.lists(smi_line(), max_size=4).map("\n".join)))
def test_nvidia_smi_csv_parser_returns_gpus_or_its_parse_error(text: str) -> None:
    try:
        result = parse_query_output(text)
    except NvidiaSmiParseError as exc:
        _has_reason(str(exc))
        return
    assert isinstance(result, QueryResult)


# --- Redfish JSON -> ChassisSample --------------------------------------------------------------------------------

REDFISH_KEYS = [
    "Status", "State", "Health", "HealthRollup", "Reading", "ReadingCelsius", "ReadingRPM", "ReadingUnits",
    "ReadingType", "Temperatures", "Fans", "Name", "PhysicalContext", "PowerControl", "PowerConsumedWatts",
    "PowerSupplies", "LiquidFlowLPM", "SupplyTemperatureCelsius", "ReturnTemperatureCelsius", "Thresholds",
    "LowerCritical", "LowerThresholdCritical", "DetectorState", "Conditions", "MessageId", "SpeedRPM",
    "SpeedPercent", "FlowLitersPerMinute", "RatedFlowLitersPerMinute", "PowerWatts", "InputPowerWatts",
    "TemperatureSummaryCelsius", "AmbientTemperatureCelsius", "FanSpeedsPercent", "Id", "Severity", "Intake",
]  # fmt: skip
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["OK", "Warning", "Critical", "Absent", "Enabled", "Cel", "RPM", "Intake", "Exhaust", "Room"]),
    st.text(max_size=8),
)
JSON_DOCS = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(REDFISH_KEYS), st.text(max_size=6)), children, max_size=6),
    ),
    max_leaves=20,
)
# redfish_http refuses a body that is not a JSON object, so the readings start from an object
JSON_OBJECTS = st.dictionaries(st.one_of(st.sampled_from(REDFISH_KEYS), st.text(max_size=6)), JSON_DOCS, max_size=8)


def _real_redfish_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((FIXTURES / "redfish").rglob("*.json"))[:400]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and any(key in doc for key in ("Temperatures", "Fans", "Reading", "Status")):
            docs.append(doc)
    return docs[:60]


REAL_REDFISH = _real_redfish_docs()


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """Replace one value somewhere in ``doc`` by arbitrary JSON."""
    if isinstance(doc, dict) and doc:
        key = data.draw(st.sampled_from(sorted(doc)))
        if data.draw(st.booleans()):
            doc[key] = data.draw(JSON_DOCS)
        else:
            doc[key] = _mutate(doc[key], data)
    elif isinstance(doc, list) and doc:
        at = data.draw(st.integers(0, len(doc) - 1))
        doc[at] = _mutate(doc[at], data)
    else:
        return data.draw(JSON_DOCS)
    return doc


def _check_chassis(fetched: list[tuple[Leaf, Any, str]]) -> None:
    try:
        chassis_from_leaves(fetched)
    except SourceError as exc:
        _has_reason(exc.reason)


@FUZZ_SLOW
@given(st.lists(st.tuples(st.sampled_from(list(LeafKind)), JSON_OBJECTS), min_size=1, max_size=4))
def test_redfish_readings_of_arbitrary_json_give_a_chassis_or_source_error(leaves: list[tuple[LeafKind, Any]]) -> None:
    fetched = [
        (Leaf(f"/redfish/v1/x/{i}", kind, i % 2), doc, f"/redfish/v1/x/{i}") for i, (kind, doc) in enumerate(leaves)
    ]
    _check_chassis(fetched)


@FUZZ
@given(st.data())
def test_redfish_readings_of_mutated_real_documents_give_a_chassis_or_source_error(data: st.DataObject) -> None:
    assert REAL_REDFISH, "the Redfish fixtures are missing"
    doc = copy.deepcopy(data.draw(st.sampled_from(REAL_REDFISH)))
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _mutate(doc, data)
    if not isinstance(doc, dict):
        doc = {"Status": doc}
    kind = data.draw(st.sampled_from(list(LeafKind)))
    _check_chassis([(Leaf("/redfish/v1/Chassis/1", kind, 0), doc, "/redfish/v1/Chassis/1")])


# --- inventory TOML ----------------------------------------------------------------------------------------------

INVENTORY_KEYS = [
    "name", "provider", "region", "interval_s", "timeout_s", "site", "kind", "url", "host", "port", "user",
    "key_file", "known_hosts", "token_env", "token_file", "password_env", "password_file", "verify_tls",
    "ca_file", "tags", "options", "sources", "scope", "rule", "demo",
]  # fmt: skip
INVENTORY_SCALARS = st.one_of(
    st.sampled_from(["dcgm", "agent", "ssh", "redfish", "nvml", "demo", "prometheus", "aws", "http://127.0.0.1:1/m"]),
    st.sampled_from(["https://h", "a", "", "node-1", "site-1", "~/x", "/etc/passwd"]),
    st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(max_size=6),
)
INVENTORY_TABLES = st.dictionaries(
    st.one_of(st.sampled_from(INVENTORY_KEYS), st.text(max_size=5)),
    st.one_of(
        INVENTORY_SCALARS,
        st.lists(INVENTORY_SCALARS, max_size=3),
        st.lists(st.dictionaries(st.sampled_from(INVENTORY_KEYS), INVENTORY_SCALARS, max_size=6), max_size=2),
    ),
    max_size=8,
)
INVENTORY_DOCS = st.dictionaries(
    st.sampled_from(["sites", "nodes", "rule_overrides", "interval_s", "extra"]),
    st.one_of(st.lists(INVENTORY_TABLES, max_size=3), INVENTORY_SCALARS),
    max_size=4,
)


def _check_inventory_text(text: str) -> None:
    try:
        fleet = parse_inventory(text, "fuzz.toml")
    except InventoryError as exc:
        _has_reason(*exc.problems)
        return
    assert isinstance(fleet, Fleet)


@FUZZ
@given(INVENTORY_DOCS)
def test_inventory_documents_give_a_fleet_or_inventory_error(document: dict[str, Any]) -> None:
    try:
        fleet = fleet_from_document(document, "fuzz.toml")
    except InventoryError as exc:
        _has_reason(*exc.problems)
    else:
        assert isinstance(fleet, Fleet)
    try:
        text = dump_document(document)
    except (TypeError, ValueError):  # the writer only promises the inventory's own shapes
        return
    _check_inventory_text(text)


TOML_LINES = [
    "[[nodes]]", "[[sites]]", "name = 'a'", 'site = "a"', "[[nodes.sources]]", 'kind = "dcgm"', "url = 'http://x/'",
    "x = {", '"""', "a.b.c = 1", "[sites]", "=", "port = 99999999999999999999", "verify_tls = 'no'",
]  # fmt: skip


@FUZZ
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(TOML_LINES), max_size=12).map("\n".join)))
def test_inventory_text_gives_a_fleet_or_inventory_error(text: str) -> None:
    _check_inventory_text(text)


# --- the sample JSON (agent API) -------------------------------------------------------------------------------

REAL_SAMPLE_JSON = sample_to_json(realistic_sample("json", gpus=2))


@FUZZ
@given(st.data())
def test_sample_json_gives_a_sample_or_schema_error(data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        doc: Any = data.draw(JSON_DOCS)
    else:
        doc = copy.deepcopy(REAL_SAMPLE_JSON)
        doc["time"] = time.time()
        for _ in range(data.draw(st.integers(1, 3))):
            doc = _mutate(doc, data)
    try:
        sample = sample_from_json(doc)
    except SchemaError as exc:
        _has_reason(str(exc))
        return
    assert isinstance(sample, NodeSample)
    json.dumps(sample_to_json(sample), allow_nan=False)
