"""`./start.sh screenshots`: PNGs of every dashboard page and of the API explorer, taken by headless Chromium from
the running stack (`./start.sh`, with its demo data), into docs/images/, so the README's pictures can be remade
after a change.

The pages are found the way Streamlit finds them: every script in `backend/dashboard/pages/`, in Streamlit's order,
at the URL Streamlit gives it (`01_bed_occupancy.py` -> `/bed_occupancy`). Chromium is driven through its WebDriver
(`chromedriver`, spoken to over HTTP with the standard library: no selenium), because a Streamlit page is drawn by
its browser after the page has loaded: the script waits until the page has stopped changing, and can type an API
key into the page's key box. Decision 0034.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from elt.config import REPO_ROOT
from elt.devstack.servers import free_port

PAGES_DIR = REPO_ROOT / "backend" / "dashboard" / "pages"
MAIN_SCRIPT = REPO_ROOT / "backend" / "dashboard" / "app.py"
IMAGES_DIR = REPO_ROOT / "docs" / "images"
EXPLORER_PATH = "/docs/explore"
WIDTH, MAX_HEIGHT = 1400, 6000
INSTALL = ("headless Chromium and its WebDriver are needed: on Debian or Ubuntu `sudo apt-get install -y chromium "
           "chromium-driver`; on macOS `brew install --cask chromium && brew install chromedriver`; or set CHROMIUM "
           "and CHROMEDRIVER to their paths")
# The WebDriver protocol's key for an element reference (W3C WebDriver, "web element identifier").
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# True once the page is drawn: Streamlit's "running" widget gone, and for Swagger UI its operations listed.
DRAWN = """return document.readyState === 'complete'
  && !document.querySelector('[data-testid="stStatusWidget"], [data-testid="stSkeleton"]')
  && (!document.getElementById('swagger-ui') || !!document.querySelector('.opblock'))"""
HEIGHT = """return Math.max(document.body.scrollHeight, ...Array.from(document.querySelectorAll(
  '[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main')).map(e => e.scrollHeight))"""


@dataclass(frozen=True)
class Shot:
    """One picture: the page's address and the PNG's name; `takes_key`: a dashboard page, which asks for a key."""

    name: str
    url: str
    takes_key: bool
    default_page: bool = False  # the navigation's first page, which the front page shows once a key is given

    @property
    def file_name(self) -> str:
        return f"{self.name}.png"


def dashboard_shots(base: str, pages_dir: Path = PAGES_DIR, main_script: Path | None = MAIN_SCRIPT) -> list[Shot]:
    """The dashboard's front page (when `main_script` exists) and each page script under `pages_dir`, in Streamlit's
    order, at the address Streamlit serves it from under `base`. Scripts named `_...` or `.` are not pages."""
    from streamlit.source_util import page_icon_and_name, page_sort_key

    base = base.rstrip("/")
    # The front page as a new user first sees it: no key yet, so it says how to get one.
    shots = [Shot("dashboard", base + "/", False)] if main_script is not None and main_script.is_file() else []
    if not pages_dir.is_dir():
        return shots
    scripts = sorted((p for p in pages_dir.glob("*.py") if not p.name.startswith(("_", "."))), key=page_sort_key)
    for number, script in enumerate(scripts):
        slug = page_icon_and_name(script)[1]
        shots.append(Shot(f"dashboard-{slug.replace('_', '-')}", f"{base}/{slug}", True, default_page=number == 0))
    return shots


def explorer_shot(api: str) -> Shot:
    return Shot("api-explorer", api.rstrip("/") + EXPLORER_PATH, False)


def find_browser() -> tuple[str, str]:
    """Chromium and chromedriver (CHROMIUM, CHROMEDRIVER, or on PATH); SystemExit saying how to install them."""
    browser = os.environ.get("CHROMIUM") or next(
        (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit(f"error: {INSTALL}")
    return browser, driver


class Browser:
    """Headless Chromium behind its chromedriver, on a loopback port; a context manager that quits both."""

    def __init__(self, browser: str, driver: str, log: Path):
        self.port = free_port()
        self.log = log.open("wb")
        self.driver = subprocess.Popen([driver, f"--port={self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.session = ""
        args = ["--headless=new", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={WIDTH},1000"] + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0
                                                  else [])  # Chromium's sandbox refuses root
        self._wait_for_driver()
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": args}}}})["sessionId"]

    def _wait_for_driver(self) -> None:
        for _ in range(100):
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except OSError:
                pass
            if self.driver.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"error: chromedriver did not start (its output: {self.log.name})")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - our own loopback driver
                return json.loads(response.read())["value"] or {}
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read() or b"{}").get("value", {})
            raise RuntimeError(f"WebDriver {path}: {error.get('error', exc.code)}: "
                               f"{str(error.get('message', '')).splitlines()[:1]}") from None

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, address: str) -> None:
        self._session("POST", "/window/rect", {"width": WIDTH, "height": 1000})
        self._session("POST", "/url", {"url": address})

    def run(self, script: str):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def settle(self, timeout: float = 60) -> bool:
        """Wait until the page is drawn and its HTML has not changed for a second and a half; False at `timeout`."""
        deadline, last, still = time.monotonic() + timeout, None, 0
        while time.monotonic() < deadline:
            now = self.run("return document.body ? document.body.innerHTML.length : 0")
            still = still + 1 if now == last and self.run(DRAWN) else 0
            if still >= 3:
                return True
            last = now
            time.sleep(0.5)
        return False

    def type_key(self, key: str) -> bool:
        """Type `key` into the page's password box (the dashboard's API key) and press Enter; False when none."""
        for _ in range(20):  # Streamlit may redraw the box between finding it and typing: find it again
            found = self._session("POST", "/elements", {"using": "css selector", "value": "input[type=password]"})
            if not found:
                return False
            try:  # a click first: chromedriver refuses keys for a box it has not focused ("not interactable")
                self._session("POST", f"/element/{found[0][ELEMENT]}/click", {})
                self._session("POST", f"/element/{found[0][ELEMENT]}/value", {"text": key + "\ue007"})  # Enter
            except RuntimeError as exc:
                if "not interactable" not in str(exc) and "stale element" not in str(exc):
                    raise
                time.sleep(0.5)
                continue
            self.run("document.activeElement && document.activeElement.blur()")  # no focus ring in the picture
            return True
        raise RuntimeError("the dashboard's API key box never took typing (10 s); is the page drawn?")

    def follow_link(self, path: str) -> None:
        """Click the page's link to `path` (the dashboard's sidebar navigation); an error when there is none."""
        for _ in range(40):  # the navigation is redrawn once the API has answered for the key: give it 20 s
            found = self._session("POST", "/elements", {"using": "css selector", "value": f'a[href$="{path}"]'})
            if found:
                self._session("POST", f"/element/{found[0][ELEMENT]}/click", {})
                return
            time.sleep(0.5)
        raise RuntimeError(f"no link to {path} on the page after 20 s: does the key's role see that page?")

    def screenshot(self, target: Path) -> None:
        """The whole page (the window made as tall as the page's content, up to MAX_HEIGHT) as a PNG."""
        height = min(int(self.run(HEIGHT) or 1000), MAX_HEIGHT)
        self._session("POST", "/window/rect", {"width": WIDTH, "height": max(height, 600)})
        time.sleep(0.5)  # a resize redraws
        target.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        if self.session:
            try:
                self._session("DELETE", "")
            except (OSError, RuntimeError):
                pass
        self.driver.terminate()
        self.driver.wait(timeout=30)
        self.log.close()


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(address, timeout=5):  # noqa: S310 - the local stack
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _arrive(browser: Browser, shot: Shot, key: str | None) -> bool:
    """Open the shot's page; whether it settled. The dashboard lists its pages only once a key is given (its
    navigation follows the key's role), and a browser's new address starts a new session without the key: so a
    dashboard page is reached from the front page, the key typed there, then by its link in the sidebar."""
    parts = urllib.parse.urlsplit(shot.url)
    if not (key and shot.takes_key):
        browser.open(shot.url)
        return browser.settle()
    browser.open(f"{parts.scheme}://{parts.netloc}/")
    browser.settle()
    browser.type_key(key)
    settled = browser.settle()
    if parts.path.strip("/") and not shot.default_page:
        browser.follow_link(parts.path)
        settled = browser.settle()
    return settled


def take(browser: Browser, shots: list[Shot], out: Path, key: str | None) -> list[str]:
    """Each shot's PNG into `out`; the problems met (a page that never settled is still photographed)."""
    problems = []
    for shot in shots:
        settled = _arrive(browser, shot, key)
        if not settled:
            problems.append(f"{shot.url} was still changing after 60 s; its picture may be incomplete")
        browser.screenshot(out / shot.file_name)
        print(f"  {out / shot.file_name}  <- {shot.url}")
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./start.sh screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default=f"http://127.0.0.1:{os.environ.get('API_PORT', '5000')}",
                        help="the API's address (default: API_PORT on loopback)")
    parser.add_argument("--dashboard", default=f"http://127.0.0.1:{os.environ.get('DASHBOARD_PORT', '8501')}",
                        help="the dashboard's address (default: DASHBOARD_PORT, else 8501, on loopback)")
    parser.add_argument("--key", default=os.environ.get("SCREENSHOT_API_KEY"),
                        help="an API key typed into each dashboard page's key box (default: SCREENSHOT_API_KEY); "
                             "make one with ./start.sh api-key create --name screenshots --role analyst")
    parser.add_argument("--out", type=Path, default=IMAGES_DIR, help="where the PNGs go (default: docs/images)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    browser_path, driver_path = find_browser()
    if not answers(f"{args.api.rstrip('/')}/health"):
        print(f"error: the API does not answer at {args.api}: start the stack first (./start.sh)", file=sys.stderr)
        return 2
    shots = dashboard_shots(args.dashboard)
    if shots and not answers(args.dashboard):
        print(f"warning: the dashboard does not answer at {args.dashboard}; only the API explorer is taken",
              file=sys.stderr)
        shots = []
    shots.append(explorer_shot(args.api))
    args.out.mkdir(parents=True, exist_ok=True)
    log = Path(os.environ.get("DATA_DIR", ".data")) / "logs" / "screenshots-chromedriver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"taking {len(shots)} screenshot(s) into {args.out} (chromedriver's log: {log}):")
    with Browser(browser_path, driver_path, log) as browser:
        problems = take(browser, shots, args.out, args.key)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
