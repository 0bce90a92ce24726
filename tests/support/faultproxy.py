"""A fault-injecting HTTPS proxy for chaos tests, between a Kubernetes client and a kube-apiserver.

The proxy listens on 127.0.0.1 (a free port, `FaultProxy.port`) with TLS from a given serving
pair, and asks clients for no certificate. Each client connection carries exactly one request:
the proxy reads the request head (at most 64 KiB) and the whole body (by `Content-Length`, or a
`Transfer-Encoding: chunked` body, which it forwards de-chunked with a `Content-Length`), opens
a fresh TLS connection to the upstream apiserver (verified against `upstream_ca`, authenticated
with the client pair), sends the request with `Connection: close` forced, and copies the
upstream's response bytes to the client unparsed, as they arrive, until the upstream closes;
then it closes the client connection. Because the response is never parsed, streamed watch
responses (chunked, long-lived) pass through as they are, and because the response carries the
upstream's `Connection: close`, clients never try to reuse a connection.

Faults:

* Watch requests (a query parameter `watch` of `true` or `1`) are long-lived and never faulted
  or counted as requests; `watches` counts them.
* Every other request gets a 1-based number, and `rule(number, method, path)` (a settable
  attribute; the path is without its query string) decides its fate: `None` forwards it, a
  `Fault` injects that fault (see `Fault`'s factories). The rule is called under the proxy's
  lock, so it need not be thread-safe, but it must be quick and must not call back into the
  proxy.
* `blackhole(True)` acts as a network partition: every open connection (watch streams
  included) is cut, both sides, and connections accepted from then on are held without even a
  TLS handshake until `blackhole(False)`, which closes them unanswered (clients then retry on
  fresh connections).

Counters for assertions, all updated under the lock: `requests` (non-watch requests seen),
`watches` (and `watch_targets`, their paths with their queries), `faults_injected` (keyed
"status-<code>", "timeout", "lost", "reset", "blackholed" for each held connection, "cut" for
each connection a blackhole cut), `log` (the last 10,000 non-watch requests as `(number, method,
path, outcome)`, the outcome being "forwarded", "upstream-error" or a fault's label),
`upstream_failures` (requests, watches included, that could not be sent upstream: answered 502
unless lost anyway, as when the apiserver is down) and `errors` (descriptions of unexpected
exceptions and of requests the proxy could not parse, which a test may assert stays empty).

Not supported, as no operator client needs them: protocol upgrades (exec, attach, port-forward:
the `Connection` header is replaced, so the apiserver refuses to upgrade), `Expect:
100-continue` beyond answering it at once, and transfer codings other than plain `chunked`.
The `Host` header is forwarded as the client sent it.

Threads: one daemon thread accepts, one daemon thread per connection. `stop()` (or leaving the
`with` block) cuts every connection and joins all threads within a bounded time.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import parse_qsl, urlsplit

import yaml

if TYPE_CHECKING:
    from tests.support.controlplane import ControlPlane

_MAX_HEAD = 64 * 1024
# Kubernetes objects are limited to about 1.5 MiB by etcd; this cap only guards against runaway
# clients filling memory.
_MAX_BODY = 64 * 1024 * 1024
_MAX_LINE = 8 * 1024
_BUFSIZE = 64 * 1024
_LOG_LIMIT = 10_000
_ERRORS_LIMIT = 1_000

# Polling interval of the accept loop: the bound on how long it takes to notice `stop()` where
# shutting the listener down does not wake a blocked accept (it does on Linux).
_ACCEPT_POLL_S = 1.0
_HANDSHAKE_TIMEOUT_S = 10.0
_UPSTREAM_CONNECT_TIMEOUT_S = 10.0
# An idle client connection that has not sent its full request within this time is dropped.
_CLIENT_READ_TIMEOUT_S = 60.0
# Watch streams may stay silent for minutes; `stop()` and blackholes cut relays explicitly, so
# this is only a last-resort bound on a relay that nothing else ends.
_RELAY_IDLE_TIMEOUT_S = 600.0
_STOP_JOIN_TIMEOUT_S = 5.0

# Headers that describe one hop and so are not forwarded (RFC 9110, section 7.6.1), plus the
# framing headers the proxy recomputes.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
        "content-length",
        "expect",
    }
)
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# The `reason` field the apiserver puts in a Status for each code (k8s.io/apimachinery
# StatusReason); codes not listed get the empty reason, which Kubernetes calls "Unknown".
_STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# Reason phrases for the status line; clients ignore them but humans reading captures do not.
_REASON_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_FAULT_KINDS = frozenset({"status", "timeout", "lost", "reset"})


@dataclass(frozen=True)
class Fault:
    """What to do to one non-watch request instead of forwarding it; build one with a factory."""

    kind: str
    status: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValueError(f"a status fault needs an error code (400-599), not {self.status}")
        if self.seconds < 0:
            raise ValueError(f"a fault cannot last {self.seconds} seconds")

    @classmethod
    def status_code(cls, code: int) -> Fault:
        """Answer at once with `code` and a Kubernetes Status body; the request is not forwarded.

        A 429 also carries `Retry-After: 1`, as the apiserver's own throttling answers do.
        """
        return cls("status", status=code)

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Hold the connection unanswered for `seconds`, then close it; the request is not forwarded."""
        return cls("timeout", seconds=seconds)

    @classmethod
    def lost(cls) -> Fault:
        """Forward the request and read the whole response, then close the client connection
        without sending any of it: the request is applied, but the client cannot know."""
        return cls("lost")

    @classmethod
    def reset(cls) -> Fault:
        """Reset the client connection at once (TCP RST) without answering or forwarding."""
        return cls("reset")

    @property
    def label(self) -> str:
        """The key of this fault in `FaultProxy.faults_injected` and its outcome in the log."""
        return f"status-{self.status}" if self.kind == "status" else self.kind


Rule = Callable[[int, str, str], Fault | None]


def _never(number: int, method: str, path: str) -> Fault | None:
    return None


class _PeerClosedError(ConnectionError):
    """The client closed its connection before sending a whole request."""


class _BadRequestError(Exception):
    """The client's request cannot be parsed or is not supported; answer `status` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _CutError(ConnectionError):
    """The connection was cut (blackhole or stop) while the handler was setting it up."""


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    # Whether the client framed a body at all: a forwarded POST with an empty body still needs
    # `Content-Length: 0`, while a GET without framing headers must stay without them.
    framed: bool

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def is_watch(self) -> bool:
        query = urlsplit(self.target).query
        return any(
            name == "watch" and value.lower() in ("true", "1")
            for name, value in parse_qsl(query, keep_blank_values=True)
        )

    def forwarded_bytes(self) -> bytes:
        """The request as sent upstream: hop-by-hop headers dropped, framing recomputed, and
        `Connection: close` so that the upstream's closing marks the end of its response."""
        named_by_connection = {
            token.strip().lower()
            for name, value in self.headers
            if name.lower() == "connection"
            for token in value.split(",")
        }
        lines = [f"{self.method} {self.target} {self.version}"]
        for name, value in self.headers:
            lowered = name.lower()
            if lowered in _HOP_BY_HOP or lowered in named_by_connection:
                continue
            lines.append(f"{name}: {value}")
        if self.framed:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


class _Reader:
    """Buffered reads from a socket, for parsing a request by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> None:
        data = self._sock.recv(_BUFSIZE)
        if not data:
            raise _PeerClosedError("client closed the connection mid-request")
        self._buffer += data

    def read_until(self, delimiter: bytes, limit: int, too_long: _BadRequestError) -> bytes:
        """Read through `delimiter`; raise `too_long` if that takes more than `limit` bytes."""
        searched = 0
        while True:
            index = self._buffer.find(delimiter, searched)
            if index >= 0:
                end = index + len(delimiter)
                if end > limit:
                    raise too_long
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            if len(self._buffer) >= limit:
                raise too_long
            # The delimiter may straddle the old end of the buffer and the next read.
            searched = max(0, len(self._buffer) - len(delimiter) + 1)
            self._fill()

    def read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    @property
    def has_unread(self) -> bool:
        return bool(self._buffer)

    def send_continue(self) -> None:
        """Answer `Expect: 100-continue`, so that such a client sends its body without a delay."""
        self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def _read_request(reader: _Reader) -> _Request:
    head = reader.read_until(b"\r\n\r\n", _MAX_HEAD, _BadRequestError(431, "request head over 64 KiB"))
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequestError(400, f"malformed request line {lines[0][:200]!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # Obsolete line folding (a line starting with white space) and names with white space
        # are refused, as RFC 9112 asks of servers.
        if not colon or not _TOKEN.fullmatch(name):
            raise _BadRequestError(400, f"malformed header line {line[:200]!r}")
        headers.append((name, value.strip(" \t")))

    def values(wanted: str) -> list[str]:
        return [value for name, value in headers if name.lower() == wanted]

    if any(value.lower() != "100-continue" for value in values("expect")):
        raise _BadRequestError(417, "unsupported Expect header")
    transfer_encodings = [
        coding.strip().lower() for value in values("transfer-encoding") for coding in value.split(",")
    ]
    lengths = {value.strip() for value in values("content-length")}
    expects_continue = bool(values("expect"))

    if transfer_encodings:
        if transfer_encodings != ["chunked"]:
            raise _BadRequestError(501, f"unsupported transfer coding {transfer_encodings}")
        if expects_continue:
            reader.send_continue()
        body = _read_chunked(reader)
        framed = True
    elif lengths:
        if len(lengths) != 1 or not lengths.copy().pop().isdigit():
            raise _BadRequestError(400, f"bad Content-Length {sorted(lengths)}")
        length = int(lengths.pop())
        if length > _MAX_BODY:
            raise _BadRequestError(413, f"request body of {length} bytes")
        if expects_continue:
            reader.send_continue()
        body = reader.read_exact(length)
        framed = True
    else:
        body = b""
        framed = False
    return _Request(method, target, version, headers, body, framed)


def _read_chunked(reader: _Reader) -> bytes:
    line_too_long = _BadRequestError(400, "chunk header line too long")
    body = bytearray()
    while True:
        line = reader.read_until(b"\r\n", _MAX_LINE, line_too_long)
        size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
        # int(..., 16) would also take "0x" prefixes and underscores, which HTTP does not.
        if not _HEX.fullmatch(size_text):
            raise _BadRequestError(400, f"bad chunk size {size_text[:50]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > _MAX_BODY:
            raise _BadRequestError(413, "chunked request body over the limit")
        body += reader.read_exact(size)
        if reader.read_exact(2) != b"\r\n":
            raise _BadRequestError(400, "chunk data not followed by CRLF")
    # Trailer fields end with an empty line; the proxy drops them (no Kubernetes client sends any).
    while reader.read_until(b"\r\n", _MAX_LINE, line_too_long) != b"\r\n":
        pass
    return bytes(body)


def _status_response(code: int, message: str) -> bytes:
    reason = _STATUS_REASONS.get(code, "")
    status: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    extra = ""
    if code == 429:
        status["details"] = {"retryAfterSeconds": 1}
        extra = "Retry-After: 1\r\n"
    body = json.dumps(status).encode()
    head = (
        f"HTTP/1.1 {code} {_REASON_PHRASES.get(code, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class _Connection:
    """The sockets of one client connection; `cut` and `close` run under the proxy's lock."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.is_cut = threading.Event()

    def sockets(self) -> list[socket.socket]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]

    def cut(self) -> None:
        """End the connection from another thread, waking its handler out of any read.

        `shutdown` (not `close`) because closing a descriptor does not wake a thread blocked on
        it, and a descriptor number closed under a thread could be reused by the next socket.
        The plain socket method is called even on TLS sockets: `SSLSocket.shutdown` would also
        drop the TLS state the handler thread is using.
        """
        self.is_cut.set()
        for sock in self.sockets():
            # An error means the socket is already closed or was never connected.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close_client(self, abort: bool = False) -> None:
        if abort:
            # Linger on, with a zero time-out: closing sends a TCP RST instead of a FIN.
            with contextlib.suppress(OSError):
                self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.close()

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


class FaultProxy:
    """A loopback HTTPS proxy in front of a kube-apiserver that injects faults; see the module."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        server_cert: Path,
        server_key: Path,
        upstream_ca: Path,
        client_cert: Path,
        client_key: Path,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.rule: Rule = _never
        self.requests = 0
        self.watches = 0
        self.upstream_failures = 0
        self.faults_injected: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[int, str, str, str]] = []
        self.watch_targets: list[str] = []  # each watch's path and query, as the client sent it
        self.errors: list[str] = []

        self._server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_context.load_cert_chain(server_cert, server_key)
        # Only HTTP/1.1 is relayed; a client offering h2 must not get it.
        self._server_context.set_alpn_protocols(["http/1.1"])
        self._upstream_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=upstream_ca)
        self._upstream_context.load_cert_chain(client_cert, client_key)
        self._upstream_context.set_alpn_protocols(["http/1.1"])

        self._lock = threading.Lock()
        # Notified when the blackhole is lifted or the proxy stops, for held connections.
        self._changed = threading.Condition(self._lock)
        self._blackholed = False
        self._started = False
        self._stopping = False
        self._connections: set[_Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._accept_thread: threading.Thread | None = None

        # Bound now, so that `port` is known before `start()` and clients can be configured.
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(_ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def blackholed(self) -> bool:
        with self._lock:
            return self._blackholed

    def start(self) -> None:
        with self._lock:
            if self._started or self._stopping:
                raise RuntimeError("a fault proxy can be started only once")
            self._started = True
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}-accept", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Close the listener and every connection, and join the threads (within a few seconds)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._changed.notify_all()
            for connection in self._connections:
                connection.cut()
        deadline = time.monotonic() + _STOP_JOIN_TIMEOUT_S
        # Shutting a listening socket down wakes a thread blocked in accept() on Linux; elsewhere
        # the accept loop notices `_stopping` at its next poll.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            self._record_error(f"threads still running after stop(): {alive}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def blackhole(self, on: bool) -> None:
        """Partition the network (`True`): cut open connections and hold new ones unanswered;
        or heal it (`False`): close the held connections, and serve new ones normally."""
        with self._lock:
            if on == self._blackholed:
                return
            self._blackholed = on
            if on:
                for connection in self._connections:
                    connection.cut()
                    self.faults_injected["cut"] += 1
            else:
                self._changed.notify_all()

    # -- internals ---------------------------------------------------------------------------

    def _record_error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
            del self.errors[:-_ERRORS_LIMIT]

    def _accept_loop(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                with self._lock:
                    if self._stopping:
                        return
                # Out of descriptors, say: back off rather than spin, and keep serving.
                self._record_error(f"accept failed: {error!r}")
                time.sleep(0.1)
                continue
            client.settimeout(_HANDSHAKE_TIMEOUT_S)
            connection = _Connection(client)
            thread = threading.Thread(
                target=self._serve, args=(connection,), name=f"faultproxy-{self.port}-conn", daemon=True
            )
            with self._lock:
                if self._stopping:
                    client.close()
                    return
                self._connections.add(connection)
                self._threads.add(thread)
            try:
                thread.start()
            except RuntimeError as error:  # no more threads: drop this one connection
                with self._lock:
                    self._connections.discard(connection)
                    self._threads.discard(thread)
                client.close()
                self._record_error(f"could not start a connection thread: {error!r}")

    def _serve(self, connection: _Connection) -> None:
        try:
            self._handle(connection)
        except (OSError, _CutError):
            pass  # peers going away, time-outs and cuts are the normal ends of a connection
        except Exception as error:
            self._record_error(f"connection handler failed: {error!r}")
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._threads.discard(threading.current_thread())
                connection.close()

    def _handle(self, connection: _Connection) -> None:
        with self._lock:
            held = self._blackholed
            if held:
                self.faults_injected["blackholed"] += 1
                # Held until the blackhole lifts, then closed unanswered: not even the TLS
                # handshake happens, as with a partition that lets only SYNs through.
                self._changed.wait_for(lambda: not self._blackholed or self._stopping)
                return
            # Wrapped under the lock, handshake deferred: `cut` must always see the socket object
            # the handler is using, and the handshake itself must be interruptible.
            connection.client = self._server_context.wrap_socket(
                connection.client, server_side=True, do_handshake_on_connect=False
            )
        client = connection.client
        assert isinstance(client, ssl.SSLSocket)
        client.do_handshake()
        client.settimeout(_CLIENT_READ_TIMEOUT_S)

        reader = _Reader(client)
        try:
            request = _read_request(reader)
        except _BadRequestError as error:
            self._record_error(f"refused a request ({error.status}): {error.message}")
            client.sendall(_status_response(error.status, f"fault proxy: {error.message}"))
            return
        if reader.has_unread:
            # The proxy handles one request per connection; a pipelined second one would be
            # silently dropped, so say so instead.
            self._record_error("client pipelined a second request; only the first was served")

        number: int | None = None
        fault: Fault | None = None
        if request.is_watch:
            with self._lock:
                self.watches += 1
                self.watch_targets.append(request.target)
                del self.watch_targets[:-_LOG_LIMIT]
        else:
            number, fault = self._decide(request)

        if fault is None:
            self._forward(connection, request, number, relay=True)
        elif fault.kind == "status":
            client.sendall(_status_response(fault.status, "injected by the fault proxy"))
        elif fault.kind == "timeout":
            connection.is_cut.wait(fault.seconds)
        elif fault.kind == "lost":
            self._forward(connection, request, number, relay=False)
        elif fault.kind == "reset":
            with self._lock:
                connection.close_client(abort=True)

    def _decide(self, request: _Request) -> tuple[int, Fault | None]:
        with self._lock:
            self.requests += 1
            number = self.requests
            path = request.path
            fault = self.rule(number, request.method, path)
            outcome = "forwarded" if fault is None else fault.label
            if fault is not None:
                self.faults_injected[fault.label] += 1
            self.log.append((number, request.method, path, outcome))
            del self.log[:-_LOG_LIMIT]
        return number, fault

    def _forward(self, connection: _Connection, request: _Request, number: int | None, relay: bool) -> None:
        """Send `request` upstream and copy the response to the client (`relay`) or discard it."""
        try:
            upstream = self._connect_upstream(connection)
            upstream.sendall(request.forwarded_bytes())
        except (ssl.SSLError, OSError) as error:
            if connection.is_cut.is_set():
                raise _CutError from error
            self._note_upstream_error(number)
            if relay:
                connection.client.sendall(_status_response(502, f"fault proxy: upstream failed: {error}"))
            return
        if relay:
            self._relay(connection.client, upstream)
        else:
            while upstream.recv(_BUFSIZE):
                pass

    def _connect_upstream(self, connection: _Connection) -> ssl.SSLSocket:
        raw = socket.create_connection(
            (self.upstream_host, self.upstream_port), timeout=_UPSTREAM_CONNECT_TIMEOUT_S
        )
        with self._lock:
            if connection.is_cut.is_set():
                raw.close()
                raise _CutError("cut while connecting upstream")
            upstream = self._upstream_context.wrap_socket(
                raw, server_hostname=self.upstream_host, do_handshake_on_connect=False
            )
            connection.upstream = upstream
        upstream.do_handshake()
        upstream.settimeout(_RELAY_IDLE_TIMEOUT_S)
        return upstream

    def _note_upstream_error(self, number: int | None) -> None:
        with self._lock:
            self.upstream_failures += 1
            # The request was logged as forwarded (or lost) when decided; say what happened.
            # Entries are in number order, and this one is recent, so search from the end.
            for index in range(len(self.log) - 1, -1, -1) if number is not None else ():
                if self.log[index][0] == number:
                    self.log[index] = (*self.log[index][:3], "upstream-error")
                    break

    def _relay(self, client: socket.socket, upstream: ssl.SSLSocket) -> None:
        """Copy upstream bytes to the client until the upstream closes or the client goes away.

        The client side is watched too, so that a client abandoning a silent watch stream frees
        the upstream connection at once instead of at the watch's server-side time-out.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(upstream, selectors.EVENT_READ, "upstream")
            selector.register(client, selectors.EVENT_READ, "client")
            while True:
                events = selector.select(_RELAY_IDLE_TIMEOUT_S)
                if not events:
                    return
                for key, _ in events:
                    if key.data == "client":
                        # After its request a client sends nothing but, at most, a TLS
                        # close_notify; end-of-stream means it is gone.
                        if not client.recv(_BUFSIZE):
                            return
                        continue
                    data = upstream.recv(_BUFSIZE)
                    if not data:
                        return
                    client.sendall(data)
                    # Decrypted bytes buffered inside the TLS layer do not make the socket
                    # readable, so drain them before selecting again.
                    while upstream.pending():
                        data = upstream.recv(_BUFSIZE)
                        if not data:
                            return
                        client.sendall(data)


def proxy_for(plane: ControlPlane) -> FaultProxy:
    """A proxy (not started) in front of the control plane's API server, with its certificates."""
    certs = plane.certs
    assert certs is not None
    host, port = plane.server.removeprefix("https://").rsplit(":", 1)
    return FaultProxy(
        host,
        int(port),
        certs.serving_cert,
        certs.serving_key,
        certs.ca_cert,
        certs.admin_cert,
        certs.admin_key,
    )


def proxied_kubeconfig(plane: ControlPlane, proxy: FaultProxy, directory: Path) -> Path:
    """The control plane's kubeconfig, pointed at `proxy`."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = proxy.url
    path = directory / "proxied-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path
