"""A real headless Chromium (Debian's package), driven over the DevTools protocol.

Only the standard library: Chromium is started with ``--remote-debugging-pipe`` (it reads
commands on its file descriptor 3 and answers on 4, each message JSON ended by a NUL),
a page is opened, every network request it makes is recorded, and JavaScript run in it
says what the page drew. Under CI a missing Chromium fails the test (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

#: Flags for this machine: no sandbox (tests may run as root), nothing fetched by the
#: browser itself (updates, sync, field trials), so that every request seen is the page's.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]


def chromium() -> str:
    """The path of Chromium: fails under CI if it is not installed, else skips."""
    found = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                              shutil.which("chromium-browser")) if p and os.path.exists(p)),
                 None)
    if found is None:
        why = "Chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"{why}; CI runs the report tests in it (.ci/run installs it)")
        pytest.skip(why)
    return found


class Page:
    """One page loaded in a new headless Chromium; use as a context manager."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        exe = chromium()  # (skips or fails first: nothing to clean up yet)
        self.timeout = timeout
        self.requests: list[str] = []  #: every URL the page asked for, in order
        self.failed: list[str] = []  #: requests that failed (blocked, refused, ...)
        self._profile = tempfile.mkdtemp(prefix="stet-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w}', exe, *FLAGS,
             f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log)
        os.close(cmd_r)
        os.close(out_w)
        self._buffer = b""
        self._next = 0
        self._events: list[dict[str, Any]] = []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.call("Target.attachToTarget",
                                      {"targetId": target, "flatten": True})["sessionId"]
            self.call("Network.enable", session=True)
            self.call("Page.enable", session=True)
            self.call("Page.navigate", {"url": url}, session=True)
            self._wait_event("Page.loadEventFired")
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------------- protocol
    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_w, data):]

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                self._log.seek(0)
                said = [line for line in self._log.read().decode(errors="replace")
                        .splitlines() if "dbus" not in line]
                raise RuntimeError("Chromium exited: " + "\n".join(said[-10:]))
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        method = message.get("method")
        if method == "Network.requestWillBeSent":
            self.requests.append(message["params"]["request"]["url"])
        elif method == "Network.loadingFailed":
            self.failed.append(str(message["params"].get("errorText")))
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session: bool = False) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.append(answer)

    def _wait_event(self, method: str) -> None:
        if any(e.get("method") == method for e in self._events):
            return
        deadline = time.monotonic() + self.timeout
        while self._receive(deadline).get("method") != method:
            pass

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.call("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png",
                                                    "captureBeyondViewport": True},
                         session=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                with contextlib.suppress(OSError):
                    self._send({"id": 0, "method": "Browser.close"})
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        finally:
            for fd in (self._cmd_w, self._out_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
