"""Test helpers: a real OpenSSH server on 127.0.0.1 and an ``nvidia-smi`` stand-in that replays real captures.

The captures (tests/fixtures/nvidia_smi, MIT licence, from utkuozdemir/nvidia_gpu_exporter) were taken
with ``--format=csv``: a header whose numeric columns carry ``[unit]`` and values with unit suffixes. The
stand-in prints what nvidia-smi prints for ``--format=csv,noheader,nounits``: only the requested fields, in
the requested order, units removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.builders import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NVIDIA_SMI_CAPTURES = FIXTURES / "nvidia_smi"
H100_LOAD_CSV = NVIDIA_SMI_CAPTURES / "h100_sxm_590_load_query_gpu_all_fields.csv"
SSHD = "/usr/sbin/sshd"
_UNIT = re.compile(r"^(?P<name>.+?) \[(?P<unit>[^\]]+)\]$")


# -- captures ------------------------------------------------------------------------------------------------


def _rows_from_csv_lines(header: str, rows: list[str]) -> list[dict[str, str]]:
    """Capture rows as {field: value as ``nounits`` prints it}."""
    columns = [c.strip() for c in header.split(", ")]
    out = []
    for row in rows:
        values = row.split(", ")
        assert len(values) == len(columns), "capture row and header disagree"
        record = {}
        for column, value in zip(columns, values, strict=True):
            match = _UNIT.match(column)
            if match is None:
                record[column] = value
                continue
            unit = match["unit"]
            suffix = f" {unit}"
            record[match["name"]] = value[: -len(suffix)] if value.endswith(suffix) else value
        out.append(record)
    return out


def capture_rows(path: Path, phase: str = "load") -> list[dict[str, str]]:
    """Rows of a ``--query-gpu`` capture: a bare CSV file, or a capture's ``<phase> :: query-gpu`` section."""
    lines = path.read_text().replace("\r", "").splitlines()
    if path.suffix == ".csv":
        return _rows_from_csv_lines(lines[0], [line for line in lines[1:] if line.strip()])
    marker = f"# {phase} :: query-gpu"
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    # marker, the command, a rule, then the header and one row per GPU until a blank line
    header_at = start + 3
    rows = []
    for line in lines[header_at + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    return _rows_from_csv_lines(lines[header_at], rows)


def noheader_nounits(rows: list[dict[str, str]], fields: list[str]) -> str:
    return "".join(", ".join(row[f] for f in fields) + "\n" for row in rows)


# -- the nvidia-smi stand-in ---------------------------------------------------------------------------------

_STANDIN = """#!{python}
# nvidia-smi stand-in for tests: replays a real capture for the requested --query-gpu fields.
import json, sys, time
state = json.load(open({state!r}))
if any(a.startswith("--query-compute-apps=") for a in sys.argv[1:]):  # not logged: calls are --query-gpu runs
    for line in state["apps"]:
        print(line)
    sys.exit(0)
with open({calls!r}, "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
mode = state["mode"]
if mode == "garbage":
    print("this is not what you asked for")
    sys.exit(0)
if mode == "driver_down":
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", file=sys.stderr)
    sys.exit(9)
if mode == "slow":
    time.sleep(5)
query = next(a for a in sys.argv[1:] if a.startswith("--query-gpu="))[len("--query-gpu="):].split(",")
if "--format=csv,noheader,nounits" not in sys.argv:
    print("stand-in only knows --format=csv,noheader,nounits", file=sys.stderr)
    sys.exit(2)
for field in query:
    if field in state["rejects"]:
        print('Field "%s" is not a valid field to query.' % field)
        print()
        sys.exit(2)
    if field not in state["rows"][0]:
        print("capture has no column %s" % field, file=sys.stderr)
        sys.exit(2)
if mode == "lost":
    print("Unable to determine the device handle for GPU0000:1B:00.0: Unknown Error")
for row in state["rows"]:
    print(", ".join(row[f] for f in query))
sys.exit(15 if mode == "lost" else 0)
"""


class NvidiaSmiStandIn:
    """A ``bin/nvidia-smi`` whose behaviour the test switches between polls by rewriting a state file."""

    def __init__(self, root: Path, rows: list[dict[str, str]]) -> None:
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir(parents=True)
        self.path = self.bin_dir / "nvidia-smi"
        self._state_path = root / "nvidia_smi_state.json"
        self._calls_path = root / "nvidia_smi_calls.log"
        self._rows = rows
        self.set(mode="ok")
        self.path.write_text(
            _STANDIN.format(python=sys.executable, state=str(self._state_path), calls=str(self._calls_path))
        )
        self.path.chmod(0o755)

    def set(self, mode: str = "ok", rejects: tuple[str, ...] = (), apps: tuple[str, ...] = ()) -> None:
        """``apps``: the lines ``--query-compute-apps`` prints (uuid, pid, name, MiB)."""
        state = {"mode": mode, "rejects": list(rejects), "rows": self._rows, "apps": list(apps)}
        self._state_path.write_text(json.dumps(state))

    def remove(self) -> None:
        self.path.unlink()

    @property
    def calls(self) -> list[str]:
        if not self._calls_path.exists():
            return []
        return self._calls_path.read_text().splitlines()


# -- the OpenSSH server --------------------------------------------------------------------------------------


def ssh_keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid`` (sshd forks one per connection, each in its own session)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SshServer:
    """``/usr/sbin/sshd -D -e`` on 127.0.0.1 with its own host key, authorized key and PATH."""

    def __init__(self, root: Path, path_dirs: list[Path], authorized_key: Path) -> None:
        self.root = root
        self.port = free_port()
        self.host_key = ssh_keygen(root / "ssh_host_ed25519_key")
        self.log_path = root / "sshd.log"
        self.config = root / "sshd_config"
        authorized = root / "authorized_keys"
        authorized.write_text(Path(f"{authorized_key}.pub").read_text())
        path_env = ":".join([*(str(p) for p in path_dirs), "/usr/bin", "/bin"])
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    f"PidFile {root / 'sshd.pid'}",
                    f"SetEnv PATH={path_env}",
                    "PrintMotd no",
                    "LogLevel INFO",
                    "",
                ]
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    def known_hosts_line(self, key: Path | None = None) -> str:
        public = Path(f"{key or self.host_key}.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n"

    def start(self, wait_s: float = 10.0) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._process.returncode}: {self.log_path.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not listen on port {self.port} within {wait_s} s")

    def stop(self) -> None:
        """Stop the listener and every connection it serves, as when the node goes down."""
        process, self._process = self._process, None
        if process is None:
            return
        for pid in [*_descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def accepted_logins(self) -> int:
        return self.log_path.read_text().count("Accepted publickey")


@contextlib.contextmanager
def running_sshd(root: Path) -> Iterator[tuple[SshServer, NvidiaSmiStandIn, Path, Path]]:
    """A started sshd whose PATH has an nvidia-smi stand-in replaying the H100 load capture; yields it, the
    stand-in, a client key it accepts and a known_hosts file that trusts it. Stopped at the end."""
    nvidia_smi = NvidiaSmiStandIn(root, capture_rows(H100_LOAD_CSV))
    client_key = ssh_keygen(root / "client_key")
    server = SshServer(root, [nvidia_smi.bin_dir], client_key)
    known_hosts = root / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    server.start()
    try:
        yield server, nvidia_smi, client_key, known_hosts
    finally:
        server.stop()
