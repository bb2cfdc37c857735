"""The dcgm fast path (a node's next payload with the same shape) gives exactly what a full parse gives, and steps
aside for anything it cannot vouch for."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.demo.server import SimulatorConfig, SimulatorServer
from console.samples.results import SourceError
from console.samples.schema import NodeSample
from console.sources.dcgm import names
from console.sources.dcgm.mapping import XidMemory
from console.sources.dcgm.source import parse_dcgm_payload, parse_with_template
from console.sources.dcgm.template import PayloadTemplate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
L4_PAYLOAD = (FIXTURES / "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt").read_text()
UUID = "GPU-22dbdd79-f55a-92a8-aa39-322198e72ed6"
LABELS = f'gpu="0",UUID="{UUID}",pci_bus_id="00000000:53:00.0",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"'
MIG_PAYLOAD = "".join(
    [
        f"DCGM_FI_DEV_GPU_TEMP{{{LABELS}}} 59\n",
        f"DCGM_FI_DEV_POWER_USAGE{{{LABELS}}} 433.78\n",
        *(
            f'DCGM_FI_DEV_FB_USED{{{LABELS},GPU_I_PROFILE="3g.40gb",GPU_I_ID="{i}"}} {used}\n'
            f'DCGM_FI_DEV_FB_FREE{{{LABELS},GPU_I_PROFILE="3g.40gb",GPU_I_ID="{i}"}} {40000 - used}\n'
            for i, used in ((1, 1000), (2, 500))
        ),
        f'DCGM_FI_DEV_XID_ERRORS{{{LABELS},err_code="0",err_msg="No Error"}} 0\n',
    ]
)
VALUE = re.compile(r"(?m)^([^#\n][^\n]*) (\S+)$")
NOW = 1_790_000_000.0


def _full(text: str, memory: XidMemory) -> NodeSample:
    return parse_dcgm_payload(text, "n1", "s1", NOW, memory)


def _template(text: str, memory: XidMemory) -> PayloadTemplate:
    _, template = parse_with_template(text, "n1", "s1", NOW, memory)
    assert template is not None
    return template


def _fast(template: PayloadTemplate, text: str, memory: XidMemory) -> NodeSample | None:
    return template.sample(text, NOW, memory, node="n1", site="s1", source="dcgm")


def _with_values(text: str, values: list[str]) -> str:
    """The payload with its sample values replaced in order (comment lines untouched)."""
    replacements = iter(values)
    return VALUE.sub(lambda m: f"{m.group(1)} {next(replacements)}", text)


def _sample_count(text: str) -> int:
    return len(VALUE.findall(text))


VALUE_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.sampled_from(["NaN", "+Inf", "-Inf", "0", "1e-3"]),
    st.sampled_from(
        [
            str(names.INT32_BLANK),
            str(names.INT32_BLANK + names.BLANK_NOT_SUPPORTED_OFFSET),
            repr(names.FP64_BLANK + names.BLANK_NOT_SUPPORTED_OFFSET),
            "9223372036854775794",
        ]
    ),
)


@pytest.mark.parametrize("payload", [L4_PAYLOAD, MIG_PAYLOAD], ids=["real L4 capture", "MIG instances"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_new_values_in_the_same_shape_give_exactly_what_a_full_parse_gives(payload: str, data: st.DataObject) -> None:
    memory = XidMemory()
    template = _template(payload, memory)
    pinned_xid = [m.group(2) for m in VALUE.finditer(payload)]
    values = [
        old if m.group(1).startswith("DCGM_FI_DEV_XID") else data.draw(VALUE_TEXT)
        for m, old in zip(VALUE.finditer(payload), pinned_xid, strict=True)
    ]
    changed = _with_values(payload, values)
    full_memory = copy.deepcopy(memory)
    fast = _fast(template, changed, memory)
    assert fast is not None, "same shape, valid values: the fast path must take it"
    assert fast == _full(changed, full_memory)


def test_a_simulated_hour_of_a_faulty_node_matches_the_full_parse_poll_for_poll() -> None:
    """Scripted faults (Xids, throttling, ECC, lost GPUs...) over the demo's schedule, one payload every 7 s."""
    server = SimulatorServer(SimulatorConfig(nodes=12, anchor=NOW))
    for name in list(server.nodes)[:4]:
        node = server.nodes[name]
        template: PayloadTemplate | None = None
        fast_memory, full_memory = XidMemory(), XidMemory()
        fast_hits = polls = 0
        for second in range(0, 3600, 7):
            text = node.metrics(NOW + second).decode()
            expected = parse_dcgm_payload(text, name, "s1", NOW + second, full_memory)
            got = None
            if template is not None:
                got = template.sample(text, NOW + second, fast_memory, node=name, site="s1", source="dcgm")
            if got is None:
                got, template = parse_with_template(text, name, "s1", NOW + second, fast_memory)
            else:
                fast_hits += 1
            polls += 1
            assert got == expected, f"{name} at +{second} s"
        assert fast_hits >= polls * 0.8, f"{name}: only {fast_hits} of {polls} payloads took the fast path"


def _most_values_new(payload: str) -> str:
    """Every value but the temperature (59, which the changes below aim at) and the Xid gauge's 0, plus one."""
    values = [m.group(2) for m in VALUE.finditer(payload)]
    return _with_values(payload, [v if v in ("59", "0") else f"{float(v) + 1:g}" for v in values])


def test_most_values_new_still_takes_the_fast_path() -> None:
    memory = XidMemory()
    template = _template(MIG_PAYLOAD, memory)
    new = _most_values_new(MIG_PAYLOAD)
    assert _fast(template, new, copy.deepcopy(memory)) == _full(new, copy.deepcopy(memory))


def _one_changed(payload: str, index: int, value: str) -> str:
    values = [m.group(2) for m in VALUE.finditer(payload)]
    values[index] = value
    return _with_values(payload, values)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: p.replace('gpu="0"', 'gpu="1"', 1), "a label changed"),
        (lambda p: p + f"DCGM_FI_DEV_SM_CLOCK{{{LABELS}}} 1980\n", "a series added"),
        (lambda p: p.replace("\n", "\n\n", 1), "a blank line added"),
        (lambda p: p.replace(" 59\n", " 59 1790000000000\n"), "a timestamp"),
        (lambda p: p.replace(" 59\n", "  59\n"), "two spaces before the value"),
        (lambda p: p.replace(" 59\n", " 5_9\n"), "a digit separator Go rejects"),
        (lambda p: p.replace(" 59\n", " ５9\n"), "a non-ASCII digit"),
        (lambda p: p.replace(" 59\n", " hot\n"), "not a number"),
        (lambda p: p.replace('err_code="0",err_msg="No Error"} 0', 'err_code="0",err_msg="No Error"} 79'), "Xid"),
    ],
)
@pytest.mark.parametrize("most_values_new", [False, True], ids=["few lines changed", "most lines changed"])
def test_anything_but_new_values_goes_to_the_full_path(change: object, why: str, most_values_new: bool) -> None:
    memory = XidMemory()
    template = _template(MIG_PAYLOAD, memory)
    # The fast path looks at changed lines one by one when few changed, and at every line when most did.
    base = _most_values_new(MIG_PAYLOAD) if most_values_new else MIG_PAYLOAD
    changed = change(base)  # type: ignore[operator]
    assert changed != base, why
    assert _fast(template, changed, copy.deepcopy(memory)) is None, why
    if why in {"a digit separator Go rejects", "a non-ASCII digit", "not a number"}:
        with pytest.raises(SourceError, match="line 1: value"):  # the full path names the line at fault
            _full(changed, copy.deepcopy(memory))
    else:
        assert _full(changed, copy.deepcopy(memory)).gpus, why


@pytest.mark.parametrize("most_values_new", [False, True], ids=["few lines changed", "most lines changed"])
def test_a_series_in_place_of_a_comment_line_goes_to_the_full_path(most_values_new: bool) -> None:
    memory = XidMemory()
    template = _template(L4_PAYLOAD, memory)
    base = L4_PAYLOAD
    if most_values_new:
        base = _with_values(base, [f"{float(m.group(2)) + 1:g}" for m in VALUE.finditer(base)])
    first_sample = next(line for line in base.splitlines() if not line.startswith("#"))
    fan = first_sample.replace("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_FAN_SPEED").rpartition(" ")[0] + " 55"
    changed = base.replace("# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).", fan, 1)
    assert changed != base
    assert _fast(template, changed, copy.deepcopy(memory)) is None
    assert _full(changed, copy.deepcopy(memory)).gpus[0].fan_pct == 55.0


def test_a_comment_whose_last_word_becomes_a_number_goes_to_the_full_path() -> None:
    memory = XidMemory()
    template = _template(L4_PAYLOAD, memory)
    help_line = "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz)."
    changed = L4_PAYLOAD.replace(help_line, help_line.replace("MHz).", "5"), 1)
    assert changed != L4_PAYLOAD
    assert _fast(template, changed, copy.deepcopy(memory)) is None


def test_a_changed_xid_gets_its_event_through_the_full_path() -> None:
    memory = XidMemory()
    template = _template(MIG_PAYLOAD, memory)
    xid = MIG_PAYLOAD.replace('err_code="0",err_msg="No Error"} 0', 'err_code="79",err_msg="fell off the bus"} 79')
    assert _fast(template, xid, memory) is None
    assert [event.code for event in _full(xid, memory).events] == [79]


def test_payloads_with_timestamps_or_duplicate_gpus_get_no_template() -> None:
    stamped = f"DCGM_FI_DEV_GPU_TEMP{{{LABELS}}} 44 1790000000500\n"
    assert parse_with_template(stamped, "n1", "s1", NOW)[1] is None
    second_index = LABELS.replace('gpu="0"', 'gpu="3"')
    twice = f"DCGM_FI_DEV_GPU_TEMP{{{LABELS}}} 44\n" + f"DCGM_FI_DEV_GPU_TEMP{{{second_index}}} 45\n"
    sample, template = parse_with_template(twice, "n1", "s1", NOW)
    assert template is None and [gpu.index for gpu in sample.gpus] == [0]


def test_the_template_is_rebuilt_when_the_shape_changes() -> None:
    """A GPU dropping off the bus changes the shape; the node's next payloads take the fast path again."""
    memory = XidMemory()
    _, first = parse_with_template(L4_PAYLOAD, "n1", "s1", NOW, memory)
    assert first is not None
    count = _sample_count(L4_PAYLOAD)
    shorter = "\n".join(line for line in L4_PAYLOAD.split("\n") if "DCGM_FI_DEV_SM_CLOCK{" not in line)
    assert _fast(first, shorter, memory) is None
    _, second = parse_with_template(shorter, "n1", "s1", NOW, memory)
    assert second is not None
    again = _with_values(shorter, ["1"] * _sample_count(shorter))
    assert _sample_count(shorter) < count
    assert _fast(second, again, memory) == _full(again, XidMemory())
