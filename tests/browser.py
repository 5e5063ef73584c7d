"""A headless Chromium driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: commands on
the browser's fd 3, replies on its fd 4, NUL-terminated JSON), with nothing beyond the standard library: open a
page, wait until its text shows what a person would look for, read that text, save a screenshot."""

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Chromium:
    def __init__(self, binary: str, profile: Path, width: int = 1680, height: int = 1000):
        cmd_read, self._cmd = os.pipe()
        self._out, out_write = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        # the browser wants the pipe on fds 3 and 4: bash moves it there (from any fd numbers), then execs it
        move = (f'exec 90<&{cmd_read} 91>&{out_write}; exec {cmd_read}<&- {out_write}>&-; '
                'exec 3<&90 4>&91 90<&- 91>&-; exec "$@"')
        self.proc = subprocess.Popen(["bash", "-c", move, "bash", *args], pass_fds=(cmd_read, out_write),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        os.close(cmd_read)
        os.close(out_write)
        self._buf, self._id, self.session = b"", 0, None
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.send("Page.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        """One DevTools command (to the page once attached); its result. Events in between are dropped."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._cmd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def text(self) -> str:
        """What the page shows as text (document.body.innerText)."""
        result = self.send("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return result["result"].get("value", "")

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def goto(self, url: str, expect: list[str], timeout: float = 90, settle: float = 1.5) -> str:
        """Open `url` and wait until its text holds every string of `expect` (then `settle` seconds more, for
        what is still drawing); returns the text. Fails naming what never appeared, with the page's text."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [e for e in expect if e not in text]
            if not missing:
                time.sleep(settle)
                return self.text()
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} never showed {missing}; it showed:\n{text[:3000]}")
            time.sleep(0.5)

    def scroll_to(self, text: str) -> None:
        """Scroll the first element whose own text is `text` to the top of the view."""
        found = self.evaluate(f"""(() => {{
            const node = document.evaluate({json.dumps(f"//*[normalize-space(text())={json.dumps(text)}]")}, document,
                                           null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
            if (node) node.scrollIntoView({{block: "start"}});
            return Boolean(node);
        }})()""")
        if not found:
            raise AssertionError(f"no element shows {text!r}")
        time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd, self._out):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
