"""Issue 18 items 5 and 7 (command line): absurd amounts of time are usage errors with a clear message, and a
malformed URL given to probe is a usage error (1), not "unreachable" (2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("gpu-console")


def gpu_console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nan", "must be a finite number of seconds, not 'nan'"),
        ("inf", "must be a finite number of seconds, not 'inf'"),
        ("-5", "must be > 0 seconds, not -5"),
        ("0", "must be > 0 seconds, not 0"),
        ("soon", "expected a number of seconds, got 'soon'"),
    ],
)
def test_poll_refuses_an_absurd_duration_before_polling(tmp_path: Path, value: str, message: str) -> None:
    db = tmp_path / "incidents.sqlite3"
    result = gpu_console("poll", "--demo", "--db", str(db), f"--duration={value}")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()  # nothing was started


@pytest.mark.parametrize(
    ("value", "message"),
    [("-1", "must be >= 0 seconds, not -1"), ("nan", "must be a finite number of seconds, not 'nan'")],
)
def test_the_smoke_test_refuses_absurd_seconds_but_takes_zero(value: str, message: str) -> None:
    refused = gpu_console(f"--smoke-test={value}")
    assert refused.returncode == 2 and message in refused.stderr
    # 0 is the packaging check's "quit on the first frame" (scripts/dev/smoke_package.py), never a usage error
    assert "must be" not in gpu_console("--smoke-test=0", "--version").stderr


def test_poll_refuses_a_non_finite_history_retention(tmp_path: Path) -> None:
    result = gpu_console("poll", "--demo", "--db", str(tmp_path / "x.sqlite3"), "--history-retention-h", "inf")
    assert result.returncode == 2
    assert "must be a finite number of hours" in result.stderr


@pytest.mark.parametrize("url", ["http://", "http://[::1", "http://host:99999/metrics", "http://a b/metrics"])
def test_probe_calls_a_malformed_url_a_usage_error(url: str) -> None:
    result = gpu_console("probe", "dcgm", url, "--timeout", "2")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("gpu-console probe: ")
    assert "unreachable" not in result.stderr


def test_probe_s_own_argument_errors_are_usage_errors_not_unreachable() -> None:
    result = gpu_console("probe", "dcgm", "http://127.0.0.1:1/metrics", "--timeout", "nan")
    assert result.returncode == 1
    assert "--timeout: must be a finite number of seconds" in result.stderr


def test_a_full_standard_output_ends_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    from console.incidents.model import ChangeKind, IncidentChange
    from console.store import IncidentStore
    from tests.helpers.builders import make_incident

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    db = tmp_path / "incidents.sqlite3"
    with IncidentStore.open(db) as store:
        store.submit([IncidentChange(ChangeKind.OPENED, make_incident(f"i-{n}", 1e9 + n), 1e9 + n) for n in range(50)])
    for args in (("list", "--json"), ("export",)):
        with Path("/dev/full").open("w") as full:
            result = subprocess.run(
                [str(SCRIPT), "incidents", *args, "--db", str(db)],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        assert result.returncode == 1
        assert result.stderr.strip() == "gpu-console incidents: cannot write the output: No space left on device"
