"""The one Protocol every telemetry source implements, and the errors a poll may end with."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from console.config.fleet import Node, SecretKind, SecretRef, Site, SourceSpec
from console.samples.results import PollFailure, SourceError

_T = TypeVar("_T")

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from console.samples.schema import NodeSample


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source gets from the poller: who it polls for and the shared HTTP session (one for all nodes)."""

    node: Node
    site: Site
    spec: SourceSpec
    timeout_s: float
    http: aiohttp.ClientSession | None = None


class Source(Protocol):
    """Reads one node once per ``poll``. Implementations are small classes registered in ``console.sources``.

    ``poll`` returns a ``NodeSample`` in the schema's units or raises ``SourceError``; it must not block the event
    loop (blocking libraries run in a worker thread, with at most one such call outstanding).
    """

    async def poll(self) -> NodeSample: ...

    async def aclose(self) -> None: ...


class BlockingCallGuard:
    """Runs blocking calls in a thread with at most one outstanding, even after a timeout abandoned one.

    ``asyncio.wait_for`` cannot stop a thread; without this guard a hung driver call plus the next poll would
    put two requests in flight.
    """

    def __init__(self) -> None:
        self._running: asyncio.Future[Any] | None = None

    async def run(self, func: Callable[..., _T], *args: Any) -> _T:
        if self._running is not None and not self._running.done():
            raise SourceError(PollFailure.BUSY, "the previous request to this node has not returned yet")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, func, *args)
        self._running = future
        # shield: a timeout cancels our wait, not the bookkeeping of the thread still running
        return await asyncio.shield(future)


# --- what every HTTP source needs (dcgm, agent, Redfish, Prometheus) ----------------------------------------------

_CHUNK_BYTES = 64 * 1024


class HttpSession:
    """The poller's shared aiohttp session, or, for a caller without one (a test), our own, closed by ``aclose``."""

    __slots__ = ("_own", "_shared")

    def __init__(self, shared: aiohttp.ClientSession | None) -> None:
        self._shared = shared
        self._own: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._shared is not None:
            return self._shared
        if self._own is None:
            import aiohttp

            self._own = aiohttp.ClientSession()
        return self._own

    async def aclose(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            await own.close()


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth (RFC 7617, UTF-8); aiohttp's BasicAuth is deprecated."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def tls_setting(verify_tls: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=`` for a target: verification off only where the inventory turns it off for that target."""
    if not verify_tls:
        return False
    if ca_file:
        import ssl

        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA file {ca_file!r}: {exc}") from exc
    return True


async def resolve_secret_for_poll(ref: SecretRef, what: str) -> str:
    """A secret at the moment of use; one that cannot be read is ``SourceError(AUTH_REFUSED, "<what>: why")``.

    The keyring may block (D-Bus, an unlock prompt): it is read in a thread, never on the poller's event loop. An
    environment variable or a small file is read in place: a thread hop per poll would cost more than the read.
    """
    from console.config.secrets import SecretError, resolve_secret

    try:
        if ref.kind is SecretKind.KEYRING:
            return await asyncio.to_thread(resolve_secret, ref)
        return resolve_secret(ref)
    except SecretError as exc:
        raise SourceError(PollFailure.AUTH_REFUSED, f"{what}: {exc}") from None


async def read_capped(
    response: aiohttp.ClientResponse, limit: int, too_big: Callable[[int | None], str]
) -> bytes | bytearray:
    """The whole body, or ``SourceError(BAD_PAYLOAD, too_big(declared size or None))`` once it passes ``limit``.

    A plain body of declared size is one read (a loop of chunks was a fifth of a dcgm poll's CPU at 1,000 nodes a
    second); a chunked or compressed one is counted as it arrives, so a bomb stops at the cap. Never
    ``response.content.read(n)``: that returns what has arrived so far, not the whole body.
    """
    declared = response.content_length
    plain = not response.headers.get("Content-Encoding")
    if declared is not None and plain:
        if declared > limit:
            raise SourceError(PollFailure.BAD_PAYLOAD, too_big(declared))
        return await response.read()
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise SourceError(PollFailure.BAD_PAYLOAD, too_big(None))
    return body  # not copied into bytes: decode() and json.loads() take a bytearray


def http_failure(exc: BaseException, where: str, timeout_s: float | None) -> SourceError:
    """The ``SourceError`` for a failed HTTP exchange (``where``: the URL or path that failed, or "")."""
    import socket
    import ssl

    import aiohttp

    at = f"{where}: " if where else ""
    if isinstance(exc, TimeoutError):
        return SourceError(PollFailure.TIMEOUT, f"{at}no answer within {timeout_s:g} s")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        detail = exc.certificate_error if isinstance(exc, aiohttp.ClientConnectorCertificateError) else exc
        return SourceError(
            PollFailure.UNREACHABLE,
            f"{at}TLS certificate not trusted ({detail}); set ca_file, or verify_tls = false for this target",
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return SourceError(PollFailure.UNREACHABLE, f"{at}cannot resolve {exc.host}: {exc.os_error}")
        return SourceError(PollFailure.UNREACHABLE, f"{at}cannot connect: {exc.os_error}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return SourceError(PollFailure.UNREACHABLE, f"{at}the server closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return SourceError(PollFailure.BAD_PAYLOAD, f"{at}truncated or corrupt response body: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return SourceError(PollFailure.UNREACHABLE, f"{at}bad HTTP response: {exc.message}")
    if isinstance(exc, aiohttp.InvalidURL):
        return SourceError(PollFailure.UNREACHABLE, f"{at}invalid URL {str(exc.url)!r}")
    return SourceError(PollFailure.UNREACHABLE, f"{at}{type(exc).__name__}: {exc}")
