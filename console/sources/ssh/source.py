"""Agentless source: ``nvidia-smi --query-gpu`` over SSH (asyncssh), one reused connection per node.

Trust is strict: the host key must already be in known_hosts (``spec.known_hosts`` or
``~/.ssh/known_hosts``); an unknown or changed key refuses the poll with a message that says which.
Authentication is by key only (``spec.key_file``, or the user's default keys and agent when none is named).
``~/.ssh/config`` is not read, so what the inventory says is what happens (a user config cannot switch
host-key checking off behind our back).

Each poll costs one ``nvidia-smi`` process start on the node; for large fleets dcgm-exporter is cheaper
(reference section 4.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

from console.config.fleet import SourceKind
from console.samples.results import PollFailure, SourceError
from console.samples.schema import EventKind, GpuEvent, GpuSample, NodeSample
from console.sources.base import SourceContext
from console.sources.ssh.nvidia_smi import (
    QUERY_FIELDS,
    NvidiaSmiParseError,
    QueryField,
    compute_apps_arguments,
    device_notices,
    invalid_query_fields,
    parse_compute_apps,
    parse_query_output,
    query_arguments,
)

if TYPE_CHECKING:
    from console.sources.base import Source

log = logging.getLogger(__name__)

DEFAULT_PORT = 22
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
_KEEPALIVE_S = 15.0  # notices a silently dead peer between polls, so the next poll reconnects instead of hanging
_COMMAND_NOT_FOUND = (126, 127)


class SshSource:
    """Reads one node by running nvidia-smi over a persistent SSH connection."""

    def __init__(self, ctx: SourceContext) -> None:
        spec = ctx.spec
        if not spec.host:
            raise ValueError("ssh source needs a host")
        self._ctx = ctx
        self._host = spec.host
        self._port = spec.port or DEFAULT_PORT
        self._where = f"{self._host}:{self._port}"
        self._known_hosts = Path(spec.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
        self._nvidia_smi = spec.option("nvidia_smi", "nvidia-smi") or "nvidia-smi"
        self._fields: tuple[QueryField, ...] = QUERY_FIELDS
        self._rejected: tuple[str, ...] = ()  # GpuSample fields this node's nvidia-smi cannot be asked for
        self._conn: asyncssh.SSHClientConnection | None = None
        self._busy = False
        self._notices: frozenset[str] = frozenset()
        self.connections_opened = 0

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The live connection, if any (diagnostics and tests)."""
        return self._conn

    async def poll(self) -> NodeSample:
        if self._busy:
            raise SourceError(PollFailure.BUSY, "the previous request to this node has not returned yet")
        self._busy = True
        try:
            return await self._poll()
        except asyncio.CancelledError:
            # A timeout cancelled us mid-command: the connection's state is unknown, start afresh next time.
            self._abort()
            raise
        finally:
            self._busy = False

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2.0)

    # -- one poll -------------------------------------------------------------------------------------------

    async def _poll(self) -> NodeSample:
        reused = self._conn is not None and not self._conn.is_closed()
        conn = await self._connection()
        try:
            result = await self._run_query(conn)
        except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, ConnectionError) as exc:
            self._abort()
            if not reused:
                raise SourceError(PollFailure.UNREACHABLE, f"{self._where}: connection lost: {exc}") from None
            # The kept connection died since the last poll (sshd restart, idle timeout): one fresh try.
            log.info("ssh %s: kept connection dropped (%s), reconnecting", self._where, exc)
            conn = await self._connection()
            try:
                result = await self._run_query(conn)
            except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, ConnectionError) as again:
                self._abort()
                raise SourceError(PollFailure.UNREACHABLE, f"{self._where}: connection lost: {again}") from None
        return result

    async def _run_query(self, conn: asyncssh.SSHClientConnection) -> NodeSample:
        # An older driver rejects fields it does not know: drop them (remembered) and ask again.
        for _attempt in range(len(QUERY_FIELDS)):
            command = shlex.join([self._nvidia_smi, *query_arguments(self._fields)])
            completed = await conn.run(command, check=False)
            read_at = time.time()
            stdout = _text(completed.stdout)
            stderr = _text(completed.stderr)
            rejected = invalid_query_fields(stdout + "\n" + stderr)
            if rejected and completed.exit_status != 0:
                self._drop_fields(rejected)
                continue
            sample = self._sample(stdout, stderr, completed.exit_status, read_at)
            return await self._with_workload(conn, sample)
        raise SourceError(PollFailure.BAD_PAYLOAD, f"{self._where}: nvidia-smi rejected every queried field")

    async def _with_workload(self, conn: asyncssh.SSHClientConnection, sample: NodeSample) -> NodeSample:
        """The compute processes per GPU (a second nvidia-smi run); an answer that fails leaves "cannot tell"."""
        completed = await conn.run(shlex.join([self._nvidia_smi, *compute_apps_arguments()]), check=False)
        if completed.exit_status != 0:
            return sample
        try:
            apps = parse_compute_apps(_text(completed.stdout))
        except NvidiaSmiParseError as exc:
            log.debug("ssh %s: compute apps unreadable: %s", self._where, exc)
            return sample
        gpus = tuple(dataclasses.replace(gpu, workload=apps.get(gpu.uuid, ())) for gpu in sample.gpus)
        return dataclasses.replace(sample, gpus=gpus)

    def _drop_fields(self, rejected: tuple[str, ...]) -> None:
        known = {f.name for f in self._fields}
        unknown = [name for name in rejected if name not in known]
        if unknown or any(f.required for f in self._fields if f.name in rejected):
            raise SourceError(
                PollFailure.BAD_PAYLOAD,
                f"{self._where}: nvidia-smi rejected the field(s) {', '.join(rejected)}",
            )
        log.info("ssh %s: nvidia-smi does not know %s; querying without it", self._where, ", ".join(rejected))
        self._rejected += tuple(f.target for f in self._fields if f.name in rejected)
        self._fields = tuple(f for f in self._fields if f.name not in rejected)

    def _sample(self, stdout: str, stderr: str, exit_status: int | None, read_at: float) -> NodeSample:
        if exit_status in _COMMAND_NOT_FOUND:
            raise SourceError(
                PollFailure.BAD_PAYLOAD,
                f"{self._where}: {self._nvidia_smi} not found or not executable on the node ({_last_line(stderr)})",
            )
        try:
            parsed = parse_query_output(stdout, self._fields)
        except NvidiaSmiParseError as exc:
            if exit_status not in (0, None):  # the failure explains the junk better than the parser can
                raise SourceError(
                    PollFailure.UNREACHABLE,
                    self._exit_message(exit_status, stdout, stderr),
                ) from None
            raise SourceError(PollFailure.BAD_PAYLOAD, f"{self._where}: nvidia-smi output: {exc}") from None
        notices = parsed.device_notices + device_notices(stderr)
        if exit_status not in (0, None) and not (parsed.gpus and notices):
            raise SourceError(
                PollFailure.UNREACHABLE,
                self._exit_message(exit_status, stdout, stderr),
            )
        gpus = parsed.gpus
        if self._rejected:
            gpus = tuple(_flag_unsupported(gpu, self._rejected) for gpu in gpus)
        return NodeSample(
            node=self._ctx.node.name,
            site=self._ctx.site.name,
            source=str(SourceKind.SSH),
            time=read_at,
            gpus=gpus,
            events=self._new_lost_events(notices, read_at),
        )

    def _exit_message(self, exit_status: int | None, stdout: str, stderr: str) -> str:
        return f"{self._where}: nvidia-smi exited {exit_status}: {_last_line(stderr) or _last_line(stdout)}"

    def _new_lost_events(self, notices: tuple[str, ...], read_at: float) -> tuple[GpuEvent, ...]:
        """A GPU nvidia-smi cannot reach is an event once, when it first appears, not on every poll."""
        current = frozenset(notices)
        fresh = sorted(current - self._notices)
        self._notices = current
        return tuple(GpuEvent(kind=EventKind.GPU_LOST, time=read_at, message=notice) for notice in fresh)

    # -- the connection -------------------------------------------------------------------------------------

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        spec = self._ctx.spec
        if not self._known_hosts.is_file():
            raise SourceError(
                PollFailure.AUTH_REFUSED,
                f"known_hosts file {self._known_hosts} does not exist: cannot verify the host key of {self._where}",
            )
        # With a named key use only that key; without one, the user's default keys and agent.
        options: dict[str, object] = {}
        if spec.key_file:
            options.update(client_keys=[self._read_key(spec.key_file)], agent_path=None)
        if spec.user:  # otherwise the local user name, as ssh does
            options["username"] = spec.user
        try:
            conn = await asyncssh.connect(
                self._host,
                self._port,
                known_hosts=str(self._known_hosts),
                config=None,
                password=None,
                kbdint_auth=False,
                connect_timeout=self._ctx.timeout_s,
                keepalive_interval=_KEEPALIVE_S,
                **options,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise SourceError(PollFailure.AUTH_REFUSED, self._host_key_problem()) from None
        except asyncssh.PermissionDenied as exc:
            user = f"{spec.user}@" if spec.user else ""
            raise SourceError(
                PollFailure.AUTH_REFUSED, f"{user}{self._where}: key authentication refused ({exc.reason})"
            ) from None
        except asyncssh.DisconnectError as exc:
            raise SourceError(PollFailure.UNREACHABLE, f"{self._where}: SSH handshake failed: {exc}") from None
        except TimeoutError:
            raise SourceError(
                PollFailure.TIMEOUT, f"{self._where}: no SSH handshake within {self._ctx.timeout_s:g} s"
            ) from None
        except OSError as exc:  # refused, no route, DNS failure
            raise SourceError(PollFailure.UNREACHABLE, f"{self._where}: {exc.strerror or exc}") from None
        self.connections_opened += 1
        log.info("ssh %s: connected", self._where)
        self._conn = conn
        return conn

    def _read_key(self, key_file: str) -> asyncssh.SSHKey:
        path = Path(key_file).expanduser()
        try:
            return asyncssh.read_private_key(path)
        except asyncssh.KeyEncryptionError:
            raise SourceError(
                PollFailure.AUTH_REFUSED,
                f"key file {path} is passphrase-protected; load it into an ssh-agent",
            ) from None
        except (OSError, asyncssh.KeyImportError) as exc:
            raise SourceError(PollFailure.AUTH_REFUSED, f"cannot read key file {path}: {exc}") from None

    def _host_key_problem(self) -> str:
        """Say whether the host is unknown or its key changed: the second one is the alarming case."""
        try:
            known = asyncssh.read_known_hosts(str(self._known_hosts))
            host_keys, ca_keys, *_ = known.match(self._host, self._host, self._port)
        except (OSError, ValueError):
            host_keys, ca_keys = [], []
        if host_keys or ca_keys:
            return (
                f"host key of {self._where} does not match the key recorded in {self._known_hosts}: "
                "the host key changed (reinstalled host, or someone in the middle); refusing to connect"
            )
        return (
            f"host key of {self._where} is unknown: no entry in {self._known_hosts}; "
            "verify its fingerprint and add it to known_hosts"
        )

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _flag_unsupported(gpu: GpuSample, fields: tuple[str, ...]) -> GpuSample:
    return dataclasses.replace(gpu, unsupported=tuple(dict.fromkeys((*gpu.unsupported, *fields))))


def make_source(ctx: SourceContext) -> Source:
    return SshSource(ctx)
