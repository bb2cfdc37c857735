"""Smoke-test what ``scripts/dev/build_package.sh`` built, the way an operator would run it.

    .venv/bin/python scripts/dev/smoke_package.py dist [--skip-deb | --bundle-only] [--runs 3] [--report figures.json]

1. The bundle (DIST/gpu-console/gpu-console): ``--version`` exits 0 and prints the project version;
   ``--smoke-test 5`` under QT_QPA_PLATFORM=offscreen with a temporary --db exits 0, its last stdout line is the
   JSON summary with nodes, gpus and samples > 0, and stderr has no line outside a short allowlist.
   Its node agent (what the systemd unit runs) answers /healthz on loopback and stops cleanly on SIGTERM.
2. The .deb (DIST/gpu-ops-console_<version>_*.deb): its layout is complete, it does not enable the agent, and
   the binary unpacked with ``dpkg-deb -x`` passes the same checks. The tarball holds the bundle.
3. Launch to first window, bundle against source (.venv/bin/gpu-console): ``--smoke-test 0`` quits on the first
   event-loop turn after the main window is shown; the time until its JSON line arrives is measured, median of
   --runs after one warm-up run each (an upper bound: it includes the orderly shutdown).

Exit status 0 when everything passed; otherwise every failure is printed with its reason and the status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_NAME = "gpu-console"
EXECUTABLE = "gpu-console.exe" if sys.platform == "win32" else "gpu-console"
SOURCE_LAUNCHER = ROOT / ".venv" / ("Scripts" if sys.platform == "win32" else "bin") / EXECUTABLE
DEB_BINARY = Path("opt/gpu-ops-console/gpu-console")
SMOKE_SECONDS = 5.0
RUN_TIMEOUT_S = 180.0

# stderr lines a healthy run may print, and why each is harmless. Anything else fails the smoke test.
STDERR_ALLOWLIST: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^\S+ \S+ WARNING qt: This plugin does not support propagateSizeHints\(\)$"),
        "the offscreen platform plugin says this on every show()",
    ),
)

DEB_REQUIRED_PATHS = (
    "opt/gpu-ops-console/gpu-console",
    "usr/bin/gpu-console",
    "usr/share/applications/gpu-ops-console.desktop",
    "usr/share/icons/hicolor/scalable/apps/gpu-ops-console.svg",
    "usr/share/icons/hicolor/256x256/apps/gpu-ops-console.png",
    "lib/systemd/system/gpu-console-agent.service",
)
# The driver's NVML must come from the driver, never from the bundle.
NVML_NAME = re.compile(r"(^libnvidia-ml\.|^nvml\.dll$|^libnvidia-ml\.dylib$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RunOutput:
    code: int
    stdout: str
    stderr: str
    seconds: float


def project_version() -> str:
    text = (ROOT / "console" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise SystemExit("smoke_package: cannot find __version__ in console/__init__.py")
    return match.group(1)


def isolated_env(home: Path) -> dict[str, str]:
    """Offscreen Qt and private config/data/runtime dirs, so a run never reads or writes the user's own."""
    env = dict(os.environ)
    runtime = home / "runtime"
    for name in ("config", "data", "cache"):
        (home / name).mkdir(parents=True, exist_ok=True)
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_RUNTIME_DIR=str(runtime),
        TZ="UTC",
    )
    return env


def run(command: Sequence[str], env: dict[str, str], timeout_s: float = RUN_TIMEOUT_S) -> RunOutput:
    start = time.monotonic()
    try:
        done = subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        return RunOutput(-1, _text(exc.stdout), _text(exc.stderr) + f"\n(timed out after {timeout_s:.0f} s)", timeout_s)
    return RunOutput(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def unexpected_stderr(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not any(pattern.match(line) for pattern, _why in STDERR_ALLOWLIST)
    ]


def summary_problems(stdout: str) -> list[str]:
    """What is wrong with the smoke run's JSON summary (its last stdout line); empty when it is fine."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return ["printed nothing on stdout (expected a JSON summary as the last line)"]
    try:
        summary = json.loads(lines[-1])
    except json.JSONDecodeError:
        return [f"last stdout line is not JSON: {lines[-1][:200]!r}"]
    if not isinstance(summary, dict):
        return [f"last stdout line is JSON but not an object: {lines[-1][:200]!r}"]
    problems = []
    for key in ("nodes", "gpus", "samples"):
        value = summary.get(key)
        if not isinstance(value, int) or value <= 0:
            problems.append(f"summary {key} = {value!r}, expected an integer > 0")
    return problems


def check_binary(binary: Path, label: str, version: str, work: Path) -> list[str]:
    """--version and --smoke-test of one built binary; returns the failures, each naming the binary."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return [f"{label}: no executable at {binary}"]
    failures: list[str] = []
    env = isolated_env(work / "home")
    shown = run([str(binary), "--version"], env, timeout_s=60)
    if shown.code != 0:
        failures.append(f"{label}: --version exited {shown.code}: {shown.stderr.strip()[-500:]}")
    elif version not in shown.stdout.split():
        failures.append(f"{label}: --version printed {shown.stdout.strip()!r}, expected version {version}")
    db = work / "smoke.db"
    smoke = run(
        [str(binary), "--smoke-test", str(SMOKE_SECONDS), "--log-level", "WARNING", "--db", str(db)],
        env,
    )
    if smoke.code != 0:
        tail = (smoke.stderr.strip() or smoke.stdout.strip())[-1500:]
        failures.append(f"{label}: --smoke-test exited {smoke.code}:\n{tail}")
    failures += [f"{label}: --smoke-test {problem}" for problem in summary_problems(smoke.stdout)]
    failures += [f"{label}: unexpected stderr line: {line}" for line in unexpected_stderr(smoke.stderr)]
    if smoke.code == 0 and not db.exists():
        failures.append(f"{label}: --smoke-test did not create the incident database at {db}")
    if not failures:
        summary = json.loads(smoke.stdout.splitlines()[-1])
        counts = ", ".join(f"{key} {summary[key]}" for key in ("nodes", "gpus", "samples"))
        print(f"ok   {label}: --version, --smoke-test {SMOKE_SECONDS:g} in {smoke.seconds:.1f} s ({counts})")
    return failures


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def check_agent(binary: Path, label: str, work: Path) -> list[str]:
    """The node agent inside the bundle (what the systemd unit runs) answers /healthz and stops on SIGTERM."""
    if not binary.is_file():
        return []  # check_binary already said so
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}/healthz"
    env = isolated_env(work / "agent-home")
    with subprocess.Popen(
        [str(binary), "--log-level", "WARNING", "agent", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as agent:
        status: int | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and agent.poll() is None and status is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = response.status
            except OSError:
                time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        try:
            _out, err = agent.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            _out, err = agent.communicate()
    if status != 200:
        return [f"{label}: agent never answered {url} (exit {agent.returncode}): {err.strip()[-800:]}"]
    if agent.returncode != 0:
        return [f"{label}: agent exited {agent.returncode} on SIGTERM: {err.strip()[-800:]}"]
    print(f"ok   {label}: agent answered /healthz and stopped on SIGTERM")
    return []


def bundled_nvml(tree: Path) -> list[str]:
    return [str(path.relative_to(tree)) for path in tree.rglob("*") if NVML_NAME.search(path.name)]


def find_deb(dist: Path, version: str) -> Path | None:
    candidates = sorted(dist.glob(f"gpu-ops-console_{version}_*.deb"))
    return candidates[-1] if candidates else None


def check_deb(deb: Path, version: str, work: Path) -> list[str]:
    unpacked = work / "root"
    unpacked.mkdir(parents=True, exist_ok=True)
    extracted = subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], capture_output=True, text=True)
    if extracted.returncode != 0:
        return [f"deb: dpkg-deb -x {deb.name} failed: {extracted.stderr.strip()}"]
    failures = [
        f"deb: {path} is missing"
        for path in DEB_REQUIRED_PATHS
        if not (unpacked / path).is_symlink() and not (unpacked / path).exists()
    ]
    link = unpacked / "usr/bin/gpu-console"
    if link.is_symlink() and os.readlink(link) != "/" + str(DEB_BINARY):
        failures.append(f"deb: usr/bin/gpu-console points at {os.readlink(link)}, expected /{DEB_BINARY}")
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Version", "Depends"], capture_output=True, text=True)
    if f"Version: {version}" not in fields.stdout:
        failures.append(f"deb: control Version is not {version}: {fields.stdout.strip()!r}")
    if "libxcb-cursor0" not in fields.stdout or "libegl1" not in fields.stdout:
        failures.append(f"deb: Depends lacks Qt's libraries: {fields.stdout.strip()!r}")
    control = work / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=False, capture_output=True)
    for script in control.glob("*"):
        text = script.read_text(errors="replace")
        if re.search(r"systemctl\s+(enable|start)|deb-systemd-helper\s+enable", text):
            failures.append(f"deb: {script.name} enables or starts the agent; it must stay off by default")
    failures += [f"deb: bundles the driver's NVML: {name}" for name in bundled_nvml(unpacked)]
    if not failures:
        print(f"ok   deb {deb.name}: layout, control, agent off by default")
    return failures + check_binary(unpacked / DEB_BINARY, f"deb {deb.name}", version, work / "run")


def check_tarball(dist: Path, version: str) -> list[str]:
    candidates = sorted(dist.glob(f"gpu-ops-console-{version}-*.tar.gz"))
    if not candidates:
        return [f"tarball: no gpu-ops-console-{version}-*.tar.gz in {dist}"]
    with tarfile.open(candidates[-1]) as archive:
        names = set(archive.getnames())
    if f"{BUNDLE_NAME}/{BUNDLE_NAME}" not in names:
        return [f"tarball: {candidates[-1].name} does not contain {BUNDLE_NAME}/{BUNDLE_NAME}"]
    print(f"ok   tarball {candidates[-1].name}: {len(names)} entries")
    return []


def time_to_first_window(binary: Path, env: dict[str, str], db: Path) -> float:
    """Seconds from spawn until the JSON line of ``--smoke-test 0`` arrives (window shown, one loop turn)."""
    start = time.monotonic()
    with subprocess.Popen(
        [str(binary), "--smoke-test", "0", "--log-level", "WARNING", "--db", str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                elapsed = time.monotonic() - start
                break
        else:
            raise RuntimeError(f"{binary} --smoke-test 0 printed no JSON line (exit {process.wait()})")
        process.wait(timeout=RUN_TIMEOUT_S)
    return elapsed


def measure_launch(bundle: Path, source: Path, runs: int, work: Path) -> dict[str, list[float]]:
    env = isolated_env(work / "home")
    timings: dict[str, list[float]] = {"bundle": [], "source": []}
    binaries = {"bundle": bundle, "source": source}
    for name, binary in binaries.items():
        time_to_first_window(binary, env, work / f"warmup-{name}.db")  # page cache, font cache, .pyc
    for index in range(runs):  # interleaved, so a burst of load on the machine hits both alike
        for name, binary in binaries.items():
            timings[name].append(time_to_first_window(binary, env, work / f"{name}-{index}.db"))
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path, help="the dist/ folder build_package.sh wrote")
    parser.add_argument("--skip-deb", action="store_true", help="there is no .deb (built with --skip-deb)")
    parser.add_argument(
        "--bundle-only", action="store_true", help="check only the bundle (Windows, macOS: no tarball, no .deb)"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed launches of each (default %(default)s)")
    parser.add_argument(
        "--source-bin", type=Path, default=SOURCE_LAUNCHER, help="the from-source launcher (default %(default)s)"
    )
    parser.add_argument("--report", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    version = project_version()
    dist = args.dist.resolve()
    bundle = dist / BUNDLE_NAME / EXECUTABLE
    failures: list[str] = []
    figures: dict[str, object] = {"version": version}
    with tempfile.TemporaryDirectory(prefix="gpu-console-smoke-") as tmp:
        work = Path(tmp)
        failures += check_binary(bundle, "bundle", version, work / "bundle")
        if sys.platform != "win32":  # the agent stops on SIGTERM; Windows has no such signal to send
            failures += check_agent(bundle, "bundle", work / "bundle")
        failures += [f"bundle: bundles the driver's NVML: {name}" for name in bundled_nvml(dist / BUNDLE_NAME)]
        if not args.bundle_only:
            failures += check_tarball(dist, version)
        if not (args.skip_deb or args.bundle_only):
            deb = find_deb(dist, version)
            if deb is None:
                failures.append(f"deb: no gpu-ops-console_{version}_*.deb in {dist} (use --skip-deb if none was built)")
            else:
                failures += check_deb(deb, version, work / "deb")
                figures["deb_bytes"] = deb.stat().st_size
        if bundle.is_file():
            figures["bundle_bytes"] = sum(
                path.lstat().st_size
                for path in (dist / BUNDLE_NAME).rglob("*")
                if not path.is_symlink() and path.is_file()
            )
        if not failures and args.runs > 0:
            if not args.source_bin.is_file():
                print(f"skip launch timing: no source launcher at {args.source_bin}")
            else:
                try:
                    timings = measure_launch(bundle, args.source_bin, args.runs, work / "timing")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append(f"launch timing: {exc}")
                else:
                    print(f"launch to first window (--smoke-test 0, median of {args.runs}, after one warm-up):")
                    for name, values in timings.items():
                        samples = ", ".join(f"{value:.2f}" for value in values)
                        print(f"  {name:<7} {statistics.median(values):6.2f} s   (runs: {samples})")
                        figures[f"launch_{name}_median_s"] = round(statistics.median(values), 3)
    if args.report is not None:
        args.report.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if failures:
        print(f"\nSMOKE TEST FAILED ({len(failures)} problem(s)):", file=sys.stderr)
        for failure in failures:
            print(f"- {failure}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
