"""The fault proxy in front of a tiny loopback HTTPS server that demands client certificates.

No Kubernetes here: the upstream stands in for the apiserver only as far as the proxy can tell
(mutual TLS, one request per connection, chunked watch streams).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.certs import ControlPlaneCerts, generate_certs
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.processes import wait_until

# Every client wait is bounded by this unless a test says otherwise.
_CLIENT_TIMEOUT_S = 5.0


@dataclass
class Upstream:
    """What the upstream server saw, shared with its handler threads."""

    port: int = 0
    count: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> int:
        with self.lock:
            return self.count


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that chunked responses are allowed; the handler still closes when the request
    # says `Connection: close`, which the proxy always does.
    protocol_version = "HTTP/1.1"
    upstream: Upstream

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output clean

    def _count(self) -> None:
        with self.upstream.lock:
            self.upstream.count += 1
            self.upstream.last_headers = {name.lower(): value for name, value in self.headers.items()}

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._count()
        url = urlsplit(self.path)
        if url.path == "/ok":
            self._reply(200, json.dumps({"kind": "Thing", "ok": True}).encode())
        elif url.path == "/stream":
            chunks = int(parse_qs(url.query).get("chunks", ["3"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for index in range(chunks):
                    data = json.dumps({"type": "ADDED", "index": index}).encode() + b"\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True  # the tests cut streams on purpose
        else:
            self._reply(404, b"{}")

    def do_POST(self) -> None:
        self._count()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(200 if self.path == "/echo" else 404, body)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ControlPlaneCerts:
    return generate_certs(tmp_path_factory.mktemp("faultproxy-certs"))


@pytest.fixture(scope="module")
def upstream(certs: ControlPlaneCerts) -> Iterator[Upstream]:
    state = Upstream()
    handler = type("Handler", (_Handler,), {"upstream": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.serving_cert, certs.serving_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(certs.ca_cert)
    # The handshake runs in the handler thread, on its first read, not in the accept loop.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(certs: ControlPlaneCerts, upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(
        "127.0.0.1",
        upstream.port,
        server_cert=certs.serving_cert,
        server_key=certs.serving_key,
        upstream_ca=certs.ca_cert,
        client_cert=certs.admin_cert,
        client_key=certs.admin_key,
    ) as running:
        yield running
    assert running.errors == []
    leftover = [thread.name for thread in threading.enumerate() if thread.name.startswith("faultproxy-")]
    assert leftover == []


@pytest.fixture(scope="module")
def client_context(certs: ControlPlaneCerts) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs.ca_cert)


@dataclass
class Client:
    proxy: FaultProxy
    context: ssl.SSLContext

    def connect(self, timeout: float = _CLIENT_TIMEOUT_S) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.proxy.port, context=self.context, timeout=timeout
        )

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = _CLIENT_TIMEOUT_S,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = self.connect(timeout)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()


@pytest.fixture
def client(proxy: FaultProxy, client_context: ssl.SSLContext) -> Client:
    return Client(proxy, client_context)


def test_get_and_post_pass_through(proxy: FaultProxy, client: Client, upstream: Upstream) -> None:
    before = upstream.seen()
    response, body = client.call("GET", "/ok?limit=5")
    assert response.status == 200
    assert json.loads(body) == {"kind": "Thing", "ok": True}
    assert upstream.last_headers["connection"] == "close"

    payload = json.dumps({"spec": {"x": "y" * 100_000}}).encode()
    response, body = client.call("POST", "/echo", body=payload)
    assert (response.status, body) == (200, payload)

    assert upstream.seen() == before + 2
    assert proxy.requests == 2
    assert proxy.log == [(1, "GET", "/ok", "forwarded"), (2, "POST", "/echo", "forwarded")]
    assert not proxy.faults_injected


def test_chunked_request_body_is_forwarded_with_a_length(client: Client, upstream: Upstream) -> None:
    connection = client.connect()
    try:
        connection.request(
            "POST",
            "/echo",
            body=iter([b'{"a": ', b"1, ", b'"b": 2}']),
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'{"a": 1, "b": 2}')
    finally:
        connection.close()
    assert upstream.last_headers["content-length"] == "16"
    assert "transfer-encoding" not in upstream.last_headers


def test_watch_streams_through_and_is_not_counted(
    proxy: FaultProxy, client: Client, upstream: Upstream
) -> None:
    # A watch is never faulted, whatever the rule says.
    proxy.rule = lambda number, method, path: Fault.reset()
    before = upstream.seen()
    connection = client.connect()
    try:
        connection.request("GET", "/stream?watch=true&resourceVersion=7")
        response = connection.getresponse()
        assert response.status == 200
        lines = [json.loads(line) for line in response.read().splitlines()]
    finally:
        connection.close()
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert upstream.seen() == before + 1
    assert (proxy.requests, proxy.watches, proxy.log) == (0, 1, [])
    assert not proxy.faults_injected


def test_status_faults_answer_without_reaching_upstream(
    proxy: FaultProxy, client: Client, upstream: Upstream
) -> None:
    faults = {1: Fault.status_code(409), 2: Fault.status_code(429), 3: Fault.status_code(500)}
    faults[5] = Fault.status_code(403)
    proxy.rule = lambda number, method, path: faults.get(number)
    before = upstream.seen()

    seen: list[tuple[int, str, str | None]] = []
    for method in ("POST", "GET", "GET", "GET", "GET"):
        response, body = client.call(method, "/echo" if method == "POST" else "/ok", body=b"{}")
        status = json.loads(body)
        seen.append(
            (response.status, status.get("reason", status.get("kind")), response.getheader("Retry-After"))
        )
        if response.status != 200:
            assert status["kind"] == "Status"
            assert status["code"] == response.status
            assert status["message"] == "injected by the fault proxy"

    assert seen == [
        (409, "Conflict", None),
        (429, "TooManyRequests", "1"),
        (500, "InternalError", None),
        (200, "Thing", None),
        (403, "Forbidden", None),
    ]
    assert upstream.seen() == before + 1  # only request 4
    assert proxy.faults_injected == {"status-409": 1, "status-429": 1, "status-500": 1, "status-403": 1}
    assert [outcome for *_, outcome in proxy.log] == [
        "status-409",
        "status-429",
        "status-500",
        "forwarded",
        "status-403",
    ]


def test_timeout_holds_then_closes(proxy: FaultProxy, client: Client, upstream: Upstream) -> None:
    proxy.rule = lambda number, method, path: Fault.timeout(0.5)
    before = upstream.seen()
    started = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        client.call("GET", "/ok")
    assert 0.45 <= time.monotonic() - started < 3.0
    # A client that gives up sooner sees its own time-out.
    with pytest.raises(TimeoutError):
        client.call("GET", "/ok", timeout=0.2)
    assert upstream.seen() == before
    assert proxy.faults_injected == {"timeout": 2}


def test_lost_reaches_upstream_but_not_the_client(
    proxy: FaultProxy, client: Client, upstream: Upstream
) -> None:
    proxy.rule = lambda number, method, path: Fault.lost() if number == 1 else None
    before = upstream.seen()
    with pytest.raises(http.client.RemoteDisconnected):
        client.call("POST", "/echo", body=b'{"create": "me"}')
    assert upstream.seen() == before + 1
    # The next request is unaffected.
    response, _ = client.call("GET", "/ok")
    assert response.status == 200
    assert proxy.faults_injected == {"lost": 1}
    assert proxy.log == [(1, "POST", "/echo", "lost"), (2, "GET", "/ok", "forwarded")]


def test_reset_closes_at_once(proxy: FaultProxy, client: Client, upstream: Upstream) -> None:
    proxy.rule = lambda number, method, path: Fault.reset()
    before = upstream.seen()
    started = time.monotonic()
    # RemoteDisconnected is itself a ConnectionResetError; which one depends on packet timing.
    with pytest.raises(ConnectionResetError):
        client.call("GET", "/ok")
    assert time.monotonic() - started < 1.0
    assert upstream.seen() == before
    assert proxy.faults_injected == {"reset": 1}


def test_blackhole_holds_new_connections_until_lifted(
    proxy: FaultProxy, client: Client, upstream: Upstream
) -> None:
    proxy.blackhole(True)
    assert proxy.blackholed
    before = upstream.seen()
    with pytest.raises(TimeoutError):
        client.call("GET", "/ok", timeout=0.5)
    assert upstream.seen() == before
    proxy.blackhole(False)
    response, _ = client.call("GET", "/ok")
    assert response.status == 200
    assert proxy.faults_injected == {"blackholed": 1}
    # Nothing was read from the held connection, so it is not a request.
    assert proxy.requests == 1


def test_blackhole_cuts_open_watch_streams(proxy: FaultProxy, client: Client) -> None:
    connection = client.connect()
    try:
        connection.request("GET", "/stream?watch=1&chunks=50")
        response = connection.getresponse()
        assert json.loads(response.readline())["index"] == 0
        started = time.monotonic()
        proxy.blackhole(True)
        # The stream ends early and abruptly, rather than after its 50 chunks (5 s).
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
        assert time.monotonic() - started < 2.0
    finally:
        connection.close()
    proxy.blackhole(False)
    assert proxy.faults_injected == {"cut": 1}


def test_unparseable_request_is_refused_and_reported(
    proxy: FaultProxy, client_context: ssl.SSLContext
) -> None:
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=_CLIENT_TIMEOUT_S) as raw,
        client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 501 ")
    assert len(proxy.errors) == 1
    proxy.errors.clear()  # expected here; the fixture asserts no others


def test_unreachable_upstream_answers_502(certs: ControlPlaneCerts, client_context: ssl.SSLContext) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        closed_port = placeholder.getsockname()[1]
    with FaultProxy(
        "127.0.0.1",
        closed_port,
        certs.serving_cert,
        certs.serving_key,
        certs.ca_cert,
        certs.admin_cert,
        certs.admin_key,
    ) as proxy:
        response, body = Client(proxy, client_context).call("GET", "/ok")
    assert response.status == 502
    assert json.loads(body)["reason"] == "BadGateway"
    assert (proxy.upstream_failures, proxy.log) == (1, [(1, "GET", "/ok", "upstream-error")])
    assert proxy.errors == []


def test_fault_factories_validate() -> None:
    assert Fault.status_code(409).label == "status-409"
    assert Fault.timeout(2).seconds == 2
    assert Fault.lost().label == "lost"
    with pytest.raises(ValueError, match="error code"):
        Fault.status_code(200)
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("drop")


def test_stop_ends_every_thread(
    certs: ControlPlaneCerts, upstream: Upstream, client_context: ssl.SSLContext
) -> None:
    proxy = FaultProxy(
        "127.0.0.1",
        upstream.port,
        certs.serving_cert,
        certs.serving_key,
        certs.ca_cert,
        certs.admin_cert,
        certs.admin_key,
    )
    proxy.start()
    client = Client(proxy, client_context)
    # One watch stream open and one connection held by a blackhole, as stop() may find them.
    watch = client.connect()
    watch.request("GET", "/stream?watch=true&chunks=50")
    response = watch.getresponse()
    response.readline()
    proxy.rule = lambda number, method, path: Fault.timeout(30)
    outcome: list[BaseException] = []

    def call_held() -> None:
        try:
            client.call("GET", "/ok")
        except OSError as error:
            outcome.append(error)

    held = threading.Thread(target=call_held, daemon=True)
    held.start()
    wait_until(lambda: proxy.faults_injected["timeout"], 30, interval=0.01, what="the request to be held")
    started = time.monotonic()
    proxy.stop()
    # Not a timing claim: a stop() that waited for the held request would take its 30 s.
    assert time.monotonic() - started < 15.0
    assert [thread.name for thread in threading.enumerate() if thread.name.startswith("faultproxy-")] == []
    held.join(2)
    assert [type(error) for error in outcome] == [http.client.RemoteDisconnected]
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    watch.close()
    assert proxy.errors == []
    proxy.stop()  # idempotent
