"""The Event Webhook server under hostile or broken clients, over real sockets: every Content-Length and chunked
body bounded, idle and slow connections dropped, a bounded number of connections, out-of-range numbers 400."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from consult.webhook import MAX_BODY_BYTES, make_server
from tests.mail_servers import WebhookSigner, free_port


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


@pytest.fixture
def server(engine, signer) -> Iterator[tuple[int, object]]:
    """The webhook server on a free port, idle timeout 1 s, request deadline 2 s, at most 4 connections."""
    running = make_server(engine, signer.public_key, port=free_port(), idle_timeout=1.0, request_deadline=2.0,
                          max_connections=4)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield running.server_address[1], running
    running.shutdown()
    running.server_close()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _status(connection: socket.socket) -> int | None:
    """The status code of the answer, or None when the server closed the connection without one."""
    data = b""
    try:
        while b"\r\n" not in data:
            part = connection.recv(4096)
            if not part:
                break
            data += part
    except ConnectionResetError:
        return None
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None


def _post(port: int, headers: dict[str, str], body: bytes = b"") -> int | None:
    connection = _connect(port)
    head = "POST /events HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    connection.sendall(head.encode() + body)
    try:
        return _status(connection)
    finally:
        connection.close()


def _signed(signer: WebhookSigner, events: list[dict[str, object]]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(events).encode()
    return signer.headers(body), body


def _event(**changes: object) -> dict[str, object]:
    return {"email": "x@example.org", "event": "processed", "timestamp": int(time.time()),
            "sg_message_id": "msg1.filter.0", "sg_event_id": "evt-1", "outbox_id": "1"} | changes


@pytest.mark.parametrize(("length", "expected"), [("-1", 400), ("abc", 400), ("1e3", 400), (" 12x", 400),
                                                  (str(MAX_BODY_BYTES + 1), 413), ("99999999999999999999", 400)])
def test_a_bad_or_oversized_content_length_is_answered_without_reading_the_body(server, length, expected, capfd):
    """A negative, non-numeric or huge Content-Length is answered at once (400 or 413) without reading a byte
    of the body and without a traceback."""
    port, _ = server
    started = time.monotonic()
    assert _post(port, {"Content-Length": length, "Content-Type": "application/json"}, b"[]" * 10) == expected
    assert time.monotonic() - started < 1.0
    assert "Traceback" not in capfd.readouterr().err


def test_a_signed_chunked_post_is_stored_and_an_oversized_one_refused(server, signer):
    """A chunked body is read chunk by chunk: a signed one is stored (204); one growing past the limit is
    answered 413 as soon as it does, not read to its end."""
    port, _ = server
    headers, body = _signed(signer, [_event()])
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:10], body[10:])) + b"0\r\n\r\n"
    assert _post(port, headers | {"Transfer-Encoding": "chunked"}, chunks) == 204

    connection = _connect(port)
    connection.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * (1024 * 1024)
    sent = 0
    try:
        while sent < 3 * MAX_BODY_BYTES:
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert _status(connection) in (413, None)
    assert sent < 3 * MAX_BODY_BYTES  # the server stopped reading: the client could not send it all
    connection.close()


def test_malformed_chunks_and_both_lengths_are_400(server):
    port, _ = server
    assert _post(port, {"Transfer-Encoding": "chunked"}, b"zz\r\nab\r\n0\r\n\r\n") == 400
    assert _post(port, {"Transfer-Encoding": "chunked", "Content-Length": "5"}, b"0\r\n\r\n") == 400
    assert _post(port, {}) == 411


@pytest.mark.slow
def test_idle_and_slow_connections_are_closed(server):
    """A connection that sends nothing is closed after the idle timeout (1 s here); a body dripped a byte at a
    time is cut off at the request deadline (2 s here)."""
    port, _ = server
    idle = _connect(port)
    started = time.monotonic()
    assert idle.recv(100) == b""
    assert 0.5 < time.monotonic() - started < 5
    idle.close()

    slow = _connect(port)
    slow.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    started = time.monotonic()
    answer = None
    try:
        for _ in range(40):
            slow.sendall(b"[")
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _status(slow)
    assert answer in (408, None) and time.monotonic() - started < 9
    slow.close()


def test_connections_beyond_the_bound_are_closed_at_once_and_threads_stay_bounded(engine, signer):
    """With 4 idle connections open (idle timeout 10 s), 20 more are each closed within 3 s and no thread is
    started for them; once the idle ones are gone, a signed post is served again."""
    running = make_server(engine, signer.public_key, port=free_port(), idle_timeout=10.0, max_connections=4)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    port = running.server_address[1]
    try:
        before = threading.active_count()
        held = [_connect(port) for _ in range(4)]
        time.sleep(0.3)
        extra = [_connect(port) for _ in range(20)]
        started = time.monotonic()
        for connection in extra:
            connection.settimeout(3)
            assert connection.recv(10) == b""  # closed by the server, long before the 10 s idle timeout
            connection.close()
        assert time.monotonic() - started < 5
        assert threading.active_count() <= before + 4
        for connection in held:
            connection.close()
        time.sleep(0.5)
        headers, body = _signed(signer, [_event()])
        assert _post(port, headers | {"Content-Length": str(len(body))}, body) == 204
    finally:
        running.shutdown()
        running.server_close()


@pytest.mark.parametrize("event", [_event(outbox_id=str(2**70)), _event(outbox_id=2**70), _event(timestamp=1e30),
                                   _event(timestamp=-5), _event(timestamp="Infinity")])
def test_out_of_range_numbers_are_answered_400(server, signer, event):
    """An outbox id of 2**70 or a timestamp of 1e30 (signed, so past the signature check) is a 400, not an
    overflow with no answer."""
    port, _ = server
    headers, body = _signed(signer, [event])
    assert _post(port, headers | {"Content-Length": str(len(body))}, body) == 400
