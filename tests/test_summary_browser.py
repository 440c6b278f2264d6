"""The published HTML summary in a real browser (Debian's headless Chromium, driven over the DevTools protocol).

It must open with no console error and no network request (it is one self-contained file), show the quoted
story as text, fit a phone's width and print. Screenshots (desktop and phone) and a PDF are saved under
``test-output/`` for people to look at.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from consult.indicators import compute_report
from consult.publish import publish_report
from db.engine import session_scope
from tests.factories import add_reference_responses, open_reference_round

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4, NUL-separated JSON)."""

    def __init__(self, profile: Path) -> None:
        to_browser_read, self._write = os.pipe()
        self._read, from_browser_write = os.pipe()

        def wire_pipes() -> None:
            # In the child: the protocol's fixed descriptors 3 (commands in) and 4 (replies out). Copy the pipe
            # ends out of the way first, as they may themselves be 3 or 4.
            reader = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            writer = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(reader, 3)
            os.dup2(writer, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             "--disable-default-apps", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             "about:blank"],
            preexec_fn=wire_pipes, close_fds=False,  # noqa: PLW1509 (only dup2 system calls in the child)
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, *, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read], [], [], remaining)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._write)
            os.close(self._read)


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    devtools = DevTools(tmp_path / "profile")
    target = devtools.send("Target.createTarget", {"url": "about:blank"})
    attached = devtools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
    devtools.session = attached["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        devtools.send(f"{domain}.enable")
    yield devtools
    devtools.close()


def open_page(browser: DevTools, url: str, *, width: int, height: int, mobile: bool) -> None:
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    browser.events.clear()
    browser.send("Page.navigate", {"url": url})
    browser.wait_for("Page.loadEventFired")


def evaluate(browser: DevTools, expression: str) -> Any:
    return browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"]["value"]


def screenshot(browser: DevTools, path: Path, *, width: int, mobile: bool) -> None:
    """The whole page, not just the viewport."""
    height = evaluate(browser, "Math.ceil(document.documentElement.scrollHeight)")
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": min(height, 12000), "deviceScaleFactor": 1, "mobile": mobile})
    data = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
    path.write_bytes(base64.b64decode(data))


def problems(browser: DevTools, page_url: str) -> list[str]:
    """Console errors/warnings, uncaught exceptions, and any request other than the page itself."""
    found = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            found.append(f"console {params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if url != page_url and not url.startswith("data:"):
                found.append(f"network request: {url}")
    return found


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_summary_opens_in_chromium_with_no_error_and_no_request(engine, settings, round_2019, tmp_path,
                                                                    test_output_dir, browser):
    """The 2020 summary (with a story carrying <script>) loads cleanly, runs nothing, fits a phone, prints."""
    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
        open_reference_round(session, 2020, token_secret=settings.resolved_token_secret())
        add_reference_responses(session, 2020)
        result = publish_report(session, compute_report(session, 2020), tmp_path / "out")
    url = result.html.resolve().as_uri()

    open_page(browser, url, width=1100, height=900, mobile=False)
    assert problems(browser, url) == []
    assert evaluate(browser, "document.scripts.length") == 0
    assert evaluate(browser, "document.body.innerText.includes('<script>alert(1)</script>')")
    assert evaluate(browser, "document.querySelectorAll('svg').length") >= 2
    assert evaluate(browser, "document.querySelector('h1').innerText").startswith("Consultation 2020")
    screenshot(browser, test_output_dir / "summary-2020-desktop.png", width=1100, mobile=False)

    open_page(browser, url, width=390, height=844, mobile=True)
    assert problems(browser, url) == []
    # Nothing but the wide tables (which scroll inside their own box) may be wider than a phone's screen.
    assert evaluate(browser, "document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert float(evaluate(browser, "getComputedStyle(document.querySelector('#narrative p')).fontSize").removesuffix("px")) >= 14
    screenshot(browser, test_output_dir / "summary-2020-phone.png", width=390, mobile=True)

    pdf = browser.send("Page.printToPDF", {"printBackground": True}, timeout=60)["data"]
    content = base64.b64decode(pdf)
    assert content.startswith(b"%PDF")
    (test_output_dir / "summary-2020.pdf").write_bytes(content)
    assert (test_output_dir / "summary-2020-desktop.png").stat().st_size > 10_000


def test_the_browser_check_catches_console_errors_and_network_requests(browser, tmp_path):
    """The checks above can fail: a page that fetches an image and logs an error is caught on both counts."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><title>bad</title><img src="http://127.0.0.1:9/pixel.png">'
                    '<script>console.error("boom")</script>', encoding="utf-8")
    url = page.as_uri()
    open_page(browser, url, width=800, height=600, mobile=False)
    found = problems(browser, url)
    assert "network request: http://127.0.0.1:9/pixel.png" in found
    assert any(item.startswith("console error") and "boom" in item for item in found)
