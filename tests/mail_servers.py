"""Local servers for mail tests: a small SendGrid stub (faults Prism cannot model), a Prism launcher serving
SendGrid's official spec, an aiosmtpd SMTP server, and a signer for Event Webhook payloads.

The stub speaks just enough of v3 Mail Send for the real ``sendgrid`` client: 202 with an ``X-Message-Id``,
400 naming refused personalizations, and scripted faults (429 with ``X-RateLimit-Reset``, 5xx, an answer that
comes too late, and a crash of the sending process right after the k-th message was accepted).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from tests.processes import stop_process_group

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACT_DIR = REPO_ROOT / "tests" / "contract"
SENDGRID_SPEC = REPO_ROOT.parent / "shared" / "contracts" / "sendgrid" / "tsg_mail_v3.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Accepted:
    """One message the stub accepted (one personalization)."""

    outbox_id: int
    email: str
    x_message_id: str
    index: int
    subject: str
    substitutions: dict[str, str]
    categories: tuple[str, ...]
    at: float


@dataclass
class Fault:
    """What the stub does with one request instead of accepting it at once.

    kind: ``429`` (answer 429, reset ``seconds`` from now), ``500``/``503`` (answer that status), ``late``
    (accept the messages, but answer only after ``seconds``: the client has timed out by then).
    """

    kind: str
    seconds: float = 0.0


@dataclass
class SendGridStub:
    """A local stand-in for api.sendgrid.com. Not thread-affine: inspect ``accepted`` after the run."""

    api_key: str = "SG.stub-key"
    faults: list[Fault] = field(default_factory=list)
    refuse_addresses: set[str] = field(default_factory=set)
    crash_after: int | None = None  # kill ``crash_pid`` right after accepting the message with this number
    crash_pid: int | None = None
    accepted: list[Accepted] = field(default_factory=list)
    requests: list[tuple[float, int]] = field(default_factory=list)  # (time, status) of every request
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every accepted request, as sent
    port: int = field(default_factory=free_port)
    _server: ThreadingHTTPServer | None = None
    _limited_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SendGridStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub._handle(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
               headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.requests.append((time.time(), status))
        try:
            handler.send_response(status)
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the "late" fault): the messages were accepted all the same

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if handler.path != "/v3/mail/send":
            return self._reply(handler, 404)
        if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._reply(handler, 401, b'{"errors":[{"field":null,"message":"authorization required"}]}')
        with self._lock:
            fault = self.faults.pop(0) if self.faults else None
            if fault is not None and fault.kind == "429":
                self._limited_until = int(time.time() + fault.seconds + 0.999)
            limited = time.time() < self._limited_until
        if limited:
            # Like SendGrid: once the limit is hit, every request is refused until the reset time.
            reset = self._limited_until
            return self._reply(handler, 429, b'{"errors":[{"message":"too many requests"}]}',
                               {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": str(reset)})
        if fault is not None and fault.kind in ("500", "502", "503"):
            return self._reply(handler, int(fault.kind), b'{"errors":[{"message":"try again later"}]}')
        request = json.loads(body)
        personalizations = request["personalizations"]
        refused = [
            {"field": f"personalizations.{index}.to.0.email", "message": "Does not contain a valid address."}
            for index, item in enumerate(personalizations)
            if item["to"][0]["email"] in self.refuse_addresses
        ]
        if refused:
            return self._reply(handler, 400, json.dumps({"errors": refused}).encode())
        x_message_id = uuid.uuid4().hex[:22]
        crash = False
        with self._lock:
            self.bodies.append(request)
            for index, item in enumerate(personalizations):
                self.accepted.append(Accepted(
                    outbox_id=int(item["custom_args"]["outbox_id"]), email=item["to"][0]["email"],
                    x_message_id=x_message_id, index=index,
                    subject=item.get("subject") or request.get("subject", ""),
                    substitutions=item.get("substitutions", {}), categories=tuple(request.get("categories", [])),
                    at=time.time(),
                ))
            if self.crash_after is not None and len(self.accepted) >= self.crash_after:
                crash, self.crash_after = True, None
        if crash:
            # The provider has the messages; the sender dies before it can record that. (Its pid is set just
            # after it started, which on a busy machine can come after its first request.)
            deadline = time.monotonic() + 30
            while self.crash_pid is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.crash_pid:
                os.kill(self.crash_pid, signal.SIGKILL)
                return None
        if fault is not None and fault.kind == "late":
            time.sleep(fault.seconds)
        return self._reply(handler, 202, b"", {"X-Message-Id": x_message_id})

    def webhook_events(self, event: str = "processed") -> list[dict[str, Any]]:
        """The events SendGrid would post for every accepted message (custom_args flattened in)."""
        return [
            {
                "email": item.email, "event": event, "timestamp": int(item.at),
                "sg_event_id": uuid.uuid4().hex, "sg_message_id": f"{item.x_message_id}.filter0001.{item.index}.0",
                "outbox_id": str(item.outbox_id), "category": list(item.categories),
            }
            for item in self.accepted
        ]


@contextmanager
def sendgrid_stub(**options: Any) -> Iterator[SendGridStub]:
    stub = SendGridStub(**options).start()
    try:
        yield stub
    finally:
        stub.stop()


def prism_binary() -> Path | None:
    binary = CONTRACT_DIR / "node_modules" / ".bin" / "prism"
    return binary if binary.exists() else None


def prism_skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed (Prism needs it)"
    if not SENDGRID_SPEC.exists():
        return f"SendGrid's spec is missing at {SENDGRID_SPEC}"
    if prism_binary() is None:
        return f"Prism is not installed: run `npm ci` in {CONTRACT_DIR}"
    return None


@contextmanager
def prism_server(log_dir: Path) -> Iterator[str]:
    """``prism mock`` serving SendGrid's official Mail Send spec on a free port; yields its URL."""
    port = free_port()
    log = (log_dir / "prism.log").open("wb")
    process = subprocess.Popen(
        [str(prism_binary()), "mock", "--host", "127.0.0.1", "-p", str(port), str(SENDGRID_SPEC)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prism exited with {process.returncode}: {(log_dir / 'prism.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"prism did not listen on {url} within 60 s")
        yield url
    finally:
        stop_process_group(process)
        log.close()


@dataclass
class WebhookSigner:
    """An ECDSA P-256 key pair like the one SendGrid signs Event Webhook posts with."""

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> str:
        """As SendGrid shows it in the settings: base64 DER SubjectPublicKeyInfo, no PEM armour."""
        from cryptography.hazmat.primitives import serialization

        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, body: bytes, timestamp: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return base64.b64encode(self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": self.sign(body, timestamp),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        }


@dataclass
class SmtpCatcher:
    """A real SMTP server (aiosmtpd) on a free port that keeps every message it receives."""

    port: int = field(default_factory=free_port)
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    def __enter__(self) -> Self:
        from aiosmtpd.controller import Controller

        catcher = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address in catcher.refuse:
                    return "550 5.1.1 mailbox unavailable"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                catcher.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
