"""The ``nvidia-smi --query-gpu`` parser on real captures (tests/fixtures/nvidia_smi, MIT licence, from
utkuozdemir/nvidia_gpu_exporter): H100 SXM, H200, H100 with MIG and a GeForce RTX 4080 SUPER.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from console.samples.codec import sample_from_json, sample_to_json
from console.samples.schema import GpuSample, NodeSample, RecoveryAction, ThrottleReason
from console.sources.ssh.nvidia_smi import (
    QUERY_FIELDS,
    NvidiaSmiParseError,
    QueryField,
    ValueKind,
    device_notices,
    invalid_query_fields,
    parse_query_output,
    query_arguments,
)
from tests.helpers.sshd_server import H100_LOAD_CSV, NVIDIA_SMI_CAPTURES, capture_rows, noheader_nounits

FIELD_NAMES = [f.name for f in QUERY_FIELDS]
H100 = NVIDIA_SMI_CAPTURES / "capture__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
H200 = NVIDIA_SMI_CAPTURES / "capture__linux-x86_64__nvidia-h200__590.48.01.txt"
H100_MIG = NVIDIA_SMI_CAPTURES / "capture__linux-x86_64__nvidia-h100-mig__590.48.01.txt"
RTX_4080 = NVIDIA_SMI_CAPTURES / "capture__linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt"


def parse_capture(path: Path, phase: str = "load") -> GpuSample:
    gpus = parse_query_output(noheader_nounits(capture_rows(path, phase), FIELD_NAMES)).gpus
    assert len(gpus) == 1
    return gpus[0]


def test_query_asks_for_every_field_in_noheader_nounits_csv() -> None:
    query, fmt = query_arguments()

    assert fmt == "--format=csv,noheader,nounits"
    assert query.startswith("--query-gpu=index,uuid,")
    assert "clocks_event_reasons.active" in query
    assert "gpu_recovery_action" in query


def test_every_queried_field_exists_in_the_590_driver() -> None:
    known = set(capture_rows(H100)[0])

    assert set(FIELD_NAMES) <= known


def test_h100_sxm_under_load() -> None:
    gpu = parse_capture(H100)

    assert gpu.index == 0
    assert gpu.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.serial == "0000000000000"
    assert gpu.vbios_version == "96.00.A5.00.01"
    assert gpu.utilization_pct == 100.0
    assert (gpu.memory_used_mib, gpu.memory_total_mib) == (19818.0, 81559.0)
    assert gpu.power_w == pytest.approx(631.95)
    assert (gpu.power_limit_w, gpu.power_default_limit_w) == (700.0, 700.0)
    assert (gpu.temperature_c, gpu.memory_temperature_c, gpu.thermal_margin_c) == (59.0, 54.0, 26.0)
    assert (gpu.sm_clock_mhz, gpu.memory_clock_mhz) == (1980.0, 2619.0)
    assert gpu.pstate == 0
    assert gpu.throttle_reasons == ()
    assert (gpu.ecc_sbe_volatile, gpu.ecc_dbe_volatile, gpu.ecc_sbe_aggregate, gpu.ecc_dbe_aggregate) == (
        0,
        0,
        0,
        0,
    )
    assert (gpu.remapped_rows_correctable, gpu.remapped_rows_uncorrectable) == (0, 0)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (False, False)
    assert (gpu.pcie_link_gen, gpu.pcie_link_gen_max, gpu.pcie_link_width, gpu.pcie_link_width_max) == (
        5,
        5,
        16,
        16,
    )
    assert gpu.recovery_action is RecoveryAction.NONE
    assert gpu.mig_mode is False
    assert gpu.fan_pct is None
    assert gpu.unsupported == ("fan_pct",)  # SXM has no board fan; everything else is reported


def test_h100_idle_reports_the_gpu_idle_clock_event() -> None:
    gpu = parse_capture(H100, "idle")

    assert gpu.throttle_reasons == (ThrottleReason.GPU_IDLE,)
    assert gpu.power_w == pytest.approx(69.85)
    assert gpu.thermal_margin_c == 46.0


def test_the_bare_csv_capture_matches_the_full_capture() -> None:
    assert parse_capture(H100_LOAD_CSV) == parse_capture(H100)


def test_h200() -> None:
    gpu = parse_capture(H200)

    assert gpu.name == "NVIDIA H200"
    assert gpu.memory_total_mib == 143771.0
    assert gpu.power_w == pytest.approx(627.40)
    assert (gpu.temperature_c, gpu.memory_temperature_c, gpu.thermal_margin_c) == (52.0, 40.0, 35.0)
    assert gpu.memory_clock_mhz == 3201.0
    assert gpu.unsupported == ("fan_pct",)


def test_h100_with_mig_loses_utilization_and_row_remapping() -> None:
    gpu = parse_capture(H100_MIG)

    assert gpu.mig_mode is True
    assert gpu.utilization_pct is None
    assert gpu.remapped_rows_correctable is None
    assert gpu.remapped_rows_pending is None
    assert {
        "utilization_pct",
        "remapped_rows_correctable",
        "remapped_rows_uncorrectable",
        "remapped_rows_pending",
        "remapped_rows_failure",
        "fan_pct",
    } == set(gpu.unsupported)
    # what MIG keeps: power, temperatures, margin, ECC
    assert gpu.power_w == pytest.approx(433.78)
    assert (gpu.memory_temperature_c, gpu.thermal_margin_c) == (59.0, 24.0)
    assert gpu.ecc_dbe_volatile == 0


def test_geforce_lacks_serial_hbm_margin_ecc_and_mig_but_has_a_fan() -> None:
    gpu = parse_capture(RTX_4080)

    assert gpu.name == "NVIDIA GeForce RTX 4080 SUPER"
    assert gpu.fan_pct == 0.0  # a real 0 %, supported: not None
    assert gpu.serial is None
    assert gpu.memory_temperature_c is None  # printed as bare "N/A", not "[N/A]"
    assert gpu.thermal_margin_c is None
    assert gpu.ecc_sbe_volatile is None
    assert gpu.mig_mode is None
    assert gpu.pstate == 2
    assert gpu.power_w == pytest.approx(84.24)
    assert (gpu.power_limit_w, gpu.pcie_link_gen) == (320.0, 4)
    assert {
        "serial",
        "memory_temperature_c",
        "thermal_margin_c",
        "ecc_sbe_volatile",
        "ecc_dbe_aggregate",
        "remapped_rows_failure",
        "mig_mode",
    } <= set(gpu.unsupported)
    assert "fan_pct" not in gpu.unsupported


def test_parsed_gpus_survive_the_schema_json_round_trip() -> None:
    gpus = tuple(parse_capture(path) for path in (H100, H200, H100_MIG, RTX_4080))
    sample = NodeSample(node="n", site="s", source="ssh", time=1.0, gpus=gpus)

    assert sample_from_json(sample_to_json(sample)) == sample


# -- hand-made lines: the edges the captures do not show ---------------------------------------------------

SMALL = (
    QueryField("index", "index", ValueKind.INT, required=True),
    QueryField("uuid", "uuid", ValueKind.TEXT, required=True),
    QueryField("power.draw", "power_w", ValueKind.FLOAT),
    QueryField("clocks_event_reasons.active", "throttle_reasons", ValueKind.HEX_MASK),
    QueryField("remapped_rows.pending", "remapped_rows_pending", ValueKind.BOOL),
    QueryField("gpu_recovery_action", "recovery_action", ValueKind.RECOVERY),
)


def small(line: str) -> GpuSample:
    return parse_query_output(line + "\n", SMALL).gpus[0]


def test_several_gpus_one_line_each() -> None:
    text = "0, GPU-a, 100.5, 0x0, No, None\n1, GPU-b, 200.25, 0x0, No, None\n\n"

    gpus = parse_query_output(text, SMALL).gpus

    assert [(g.index, g.uuid, g.power_w) for g in gpus] == [(0, "GPU-a", 100.5), (1, "GPU-b", 200.25)]


def test_throttle_mask_becomes_reason_names() -> None:
    gpu = small("0, GPU-a, 100, 0x0000000000000044, No, None")

    assert gpu.throttle_reasons == (ThrottleReason.SW_POWER_CAP, ThrottleReason.HW_THERMAL_SLOWDOWN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("None", RecoveryAction.NONE),
        ("GPU Reset Required", RecoveryAction.GPU_RESET),
        ("Reset", RecoveryAction.GPU_RESET),
        ("Node Reboot Required", RecoveryAction.NODE_REBOOT),
        ("Drain P2P", RecoveryAction.DRAIN_P2P),
        ("Drain and Reset", RecoveryAction.DRAIN_AND_RESET),
        ("0x4 (Drain and Reset)", RecoveryAction.DRAIN_AND_RESET),
        ("Bus Reset", RecoveryAction.BUS_RESET),
    ],
)
def test_recovery_action_names(text: str, expected: RecoveryAction) -> None:
    assert small(f"0, GPU-a, 1, 0x0, No, {text}").recovery_action is expected


@pytest.mark.parametrize(("text", "expected"), [("Yes", True), ("No", False), ("Pending", True)])
def test_yes_no_pending_become_booleans(text: str, expected: bool) -> None:
    assert small(f"0, GPU-a, 1, 0x0, {text}, None").remapped_rows_pending is expected


@pytest.mark.parametrize("marker", ["[N/A]", "N/A", "[Not Supported]", "[Requested functionality has been deprecated]"])
def test_not_available_markers_become_null_and_unsupported(marker: str) -> None:
    gpu = small(f"0, GPU-a, {marker}, 0x0, No, None")

    assert gpu.power_w is None
    assert gpu.unsupported == ("power_w",)


def test_a_read_error_is_null_but_not_unsupported() -> None:
    gpu = small("0, GPU-a, [Unknown Error], 0x0, No, None")

    assert gpu.power_w is None
    assert gpu.unsupported == ()


def test_values_with_units_still_parse() -> None:
    assert small("0, GPU-a, 631.95 W, 0x0, No, None").power_w == pytest.approx(631.95)


def test_wrong_column_count_names_the_line() -> None:
    text = "0, GPU-a, 1, 0x0, No, None\n1, GPU-b, 1, 0x0\n"

    with pytest.raises(NvidiaSmiParseError, match=r"line 2: expected 6 columns, got 4") as caught:
        parse_query_output(text, SMALL)
    assert caught.value.line == 2


def test_non_numeric_value_names_line_and_column() -> None:
    with pytest.raises(NvidiaSmiParseError, match=r"line 1, column power.draw: expected a number") as caught:
        small("0, GPU-a, lots, 0x0, No, None")
    assert caught.value.column == "power.draw"


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("x, GPU-a, 1, 0x0, No, None", "index"),
        ("0, [N/A], 1, 0x0, No, None", "uuid"),
        ("0, GPU-a, 1, 0xZZ, No, None", "clocks_event_reasons.active"),
        ("0, GPU-a, 1, 0x0, Maybe, None", "remapped_rows.pending"),
        ("0, GPU-a, 1, 0x0, No, Pray", "gpu_recovery_action"),
    ],
)
def test_bad_values_name_their_column(line: str, column: str) -> None:
    with pytest.raises(NvidiaSmiParseError, match=f"column {column}"):
        small(line)


def test_the_same_gpu_twice_is_an_error() -> None:
    with pytest.raises(NvidiaSmiParseError, match="GPU-a appears twice"):
        parse_query_output("0, GPU-a, 1, 0x0, No, None\n1, GPU-a, 1, 0x0, No, None\n", SMALL)


def test_unreachable_gpu_lines_are_notices_not_rows() -> None:
    notice = "Unable to determine the device handle for GPU0000:1B:00.0: Unknown Error"

    result = parse_query_output(f"{notice}\n0, GPU-a, 1, 0x0, No, None\n", SMALL)

    assert [g.uuid for g in result.gpus] == ["GPU-a"]
    assert result.device_notices == (notice,)
    assert device_notices(f"noise\n{notice}\n") == (notice,)


def test_rejected_fields_are_recognised() -> None:
    output = 'Field "gpu_recovery_action" is not a valid field to query.\n\n'

    assert invalid_query_fields(output) == ("gpu_recovery_action",)
    assert invalid_query_fields("0, GPU-a, 1") == ()
