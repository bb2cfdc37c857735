"""The Prometheus text exposition parser: what it accepts, what it rejects, and that it never crashes."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from console.sources.exposition import ExpositionError, ExpositionParser, parse_exposition

# The L4 capture is from cncf/k8s-ai-conformance (Apache-2.0); see tests/fixtures/SOURCES.md.
L4_FIXTURE = "dcgm_exporter_sample_cncf_kops_nvidia_L4.txt"


def test_parses_comments_help_type_escapes_timestamps_and_special_values() -> None:
    text = (
        "# a free comment\n"
        "\n"
        "# HELP temp_c GPU temperature \\\\ in C\\nsecond line\n"
        "# TYPE temp_c gauge\n"
        'temp_c{gpu="0",msg="say \\"hi\\" \\\\ path\\nnext } line",} 41.5 1700000000123\n'
        "   \n"
        'temp_c{gpu="1"} NaN\n'
        "up +Inf\n"
        "down -Inf\r\n"
        "  indented 7\n"
        'spaced {a = "b" , c="d"} 1e3\n'
    )
    exposition = parse_exposition(text)
    name, labels, value, timestamp = exposition.samples[0]
    assert (name, value, timestamp) == ("temp_c", 41.5, 1700000000123)
    assert labels == {"gpu": "0", "msg": 'say "hi" \\ path\nnext } line'}
    assert math.isnan(exposition.samples[1][2])
    assert exposition.samples[2][:3] == ("up", {}, math.inf)
    assert exposition.samples[3][:3] == ("down", {}, -math.inf)
    assert exposition.samples[4][:3] == ("indented", {}, 7.0)
    assert exposition.samples[5][:3] == ("spaced", {"a": "b", "c": "d"}, 1000.0)
    assert exposition.types == {"temp_c": "gauge"}
    assert exposition.helps == {"temp_c": "GPU temperature \\ in C\nsecond line"}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('ok 1\nbad{gpu="0" 1\n', 2, "not closed"),
        ("ok 1\n\nbad{gpu=0} 1\n", 3, "double quote"),
        ('x{gpu="0} 1\n', 1, "unterminated"),
        ('x{gpu="a\\qb"} 1\n', 1, "invalid escape"),
        ('x{gpu="0",gpu="1"} 1\n', 1, "twice"),
        ('x{0gpu="0"} 1\n', 1, "invalid label name"),
        ('x{gpu="0" uuid="1"} 1\n', 1, "expected ','"),
        ("x 12abc\n", 1, "not a number"),
        ("x 1_000\n", 1, "not a number"),
        ("x 1 17e3\n", 1, "timestamp"),
        ("x 1 2 3\n", 1, "unexpected text"),
        ("x\n", 1, "missing value"),
        ("9x 1\n", 1, "invalid metric name"),
        ('{gpu="0"} 1\n', 1, "invalid metric name"),
        ("# TYPE x gauge\n# TYPE x counter\n", 2, "second TYPE"),
        ("# TYPE x histogramm\n", 1, "unknown metric type"),
        ("# HELP\n", 1, "without a metric name"),
    ],
)
def test_malformed_input_names_the_line_and_the_problem(text: str, line: int, words: str) -> None:
    with pytest.raises(ExpositionError) as caught:
        parse_exposition(text)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"line {line}:")


def _prometheus_client_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    # prometheus_client appends "_total" to counter samples; the wire name has none
    families = text_string_to_metric_families(text)
    return [(s.name.removesuffix("_total"), dict(s.labels), s.value) for f in families for s in f.samples]


def test_agrees_with_prometheus_client_on_the_real_l4_payload(fixtures_dir: Path) -> None:
    text = (fixtures_dir / L4_FIXTURE).read_text()
    ours = [(name, dict(labels), value) for name, labels, value, _ts in parse_exposition(text).samples]
    assert len(ours) == 23
    assert ours == _prometheus_client_samples(text)


def test_a_reused_parser_gives_the_same_result_every_time(fixtures_dir: Path) -> None:
    text = (fixtures_dir / L4_FIXTURE).read_text()
    parser = ExpositionParser()
    first = parser.parse(text)
    second = parser.parse(text)
    assert first == second
    assert first.types["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == "counter"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_text_parses_or_raises_exposition_error(text: str) -> None:
    with contextlib.suppress(ExpositionError):
        parse_exposition(text)


_PIECES = st.sampled_from(
    [
        'x{a="',
        '"}',
        "} ",
        " 1",
        " NaN",
        " +Inf",
        " 17",
        "\\",
        '\\"',
        "\\n",
        "\n",
        "# HELP ",
        "# TYPE ",
        "gauge",
        ",",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=20).map("".join))
def test_near_valid_fragments_parse_or_raise_exposition_error(text: str) -> None:
    with contextlib.suppress(ExpositionError):
        parse_exposition(text)


_label_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), max_size=20)
_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,15}", fullmatch=True)
_label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            _names,
            st.dictionaries(_label_names, _label_values, max_size=4),
            st.floats(allow_nan=False),
            st.one_of(st.none(), st.integers(min_value=-(2**62), max_value=2**62)),
        ),
        max_size=8,
    )
)
def test_whatever_is_written_correctly_reads_back_the_same(
    series: list[tuple[str, dict[str, str], float, int | None]],
) -> None:
    lines = []
    for name, labels, value, timestamp in series:
        label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        stamp = f" {timestamp}" if timestamp is not None else ""
        lines.append(f"{name}{{{label_text}}} {value!r}{stamp}")
    parsed = parse_exposition("\n".join(lines)).samples
    assert parsed == series
