"""Headless Chromium for end-to-end tests: dump a page's DOM after its scripts ran, or take
a screenshot, and read headings and tables back out of the DOM.

Install the browser with ``apt-get install -y chromium`` (Debian/Ubuntu). The flags are
the ones DESIGN.md records: no sandbox (tests run as root in containers), no GPU, and no
background traffic (component updates, sync, QUIC), so the only requests the browser
makes are the page's own. Each call gets a fresh profile directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")
INSTALL_HINT = "install it with `apt-get install -y chromium`"


def find_chromium() -> str | None:
    """The path of an installed Chromium or Chrome, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def ensure_chromium(timeout: float = 900) -> tuple[str | None, str]:
    """An installed Chromium, installing it with apt-get when it is missing and we are root
    (as on the CI machines). Returns (path or None, what happened)."""
    found = find_chromium()
    if found is not None:
        return found, "already installed"
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, f"not installed, and apt-get is not available as root; {INSTALL_HINT}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"],
                ["sh", "-c", "apt-get update -q && apt-get install -y -q chromium"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s"
        if proc.returncode == 0 and find_chromium() is not None:
            return find_chromium(), "installed with apt-get"
    return None, f"apt-get could not install chromium: {proc.stderr.strip()[-300:]}"


def _run(url: str, args: list[str], *, window_size: tuple[int, int], budget_ms: int | None,
         timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(f"No Chromium found (looked for {', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}.")
    # One retry with a fresh profile: on a loaded 2-core machine a headless Chromium has hung
    # once in a full suite (killed after 90 s) on a page that renders in seconds alone.
    for attempt in range(2):
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--window-size={window_size[0]},{window_size[1]}"]
            if budget_ms is not None:
                # Virtual time runs the page's timers and fetches until the budget is used up,
                # so a JavaScript app has rendered before the DOM or the pixels are taken.
                cmd.append(f"--virtual-time-budget={budget_ms}")
            try:
                proc = subprocess.run([*cmd, *args, url], capture_output=True, text=True, timeout=timeout,
                                      check=False)
                break
            except subprocess.TimeoutExpired:
                if attempt == 1:
                    raise
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode} on {url}:\n{proc.stderr[-2000:]}")
    return proc


def dump_dom(url: str, *, window_size: tuple[int, int] = (1600, 1000), budget_ms: int | None = None,
             screenshot_to: Path | None = None, timeout: float = 90) -> str:
    """The serialised DOM of ``url`` after loading (and ``budget_ms`` of virtual time).

    With ``screenshot_to``, the same browser run also writes a PNG of the first
    ``window_size`` pixels there, so the picture and the DOM show the same state.
    """
    args = ["--dump-dom"]
    if screenshot_to is not None:
        screenshot_to = Path(screenshot_to).resolve()
        screenshot_to.parent.mkdir(parents=True, exist_ok=True)
        screenshot_to.unlink(missing_ok=True)
        args.append(f"--screenshot={screenshot_to}")
    proc = _run(url, args, window_size=window_size, budget_ms=budget_ms, timeout=timeout)
    if screenshot_to is not None and (not screenshot_to.is_file() or screenshot_to.stat().st_size == 0):
        raise RuntimeError(f"chromium wrote no screenshot of {url} to {screenshot_to}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def full_page_screenshot(url: str, path: Path, *, width: int = 1280, max_height: int = 16000,
                         timeout: float = 90) -> Path:
    """A PNG of the whole page (up to ``max_height`` px): taken in a tall window, then cut
    below the last non-white row. Headless ``--screenshot`` only captures the window."""
    from PIL import Image, ImageChops

    path = Path(path).resolve()
    dump_dom(url, window_size=(width, max_height), screenshot_to=path, timeout=timeout)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box is not None:
        rgb.crop((0, 0, width, min(box[3] + 24, rgb.height))).save(path)
    return path


@dataclass
class Section:
    """An ``<h2>`` heading with the text and tables that follow it up to the next one."""

    heading: str
    text: list[str] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)  # table → rows → cell texts
    n_svg: int = 0


class _Sections(HTMLParser):
    """Splits a page into :class:`Section` s; what precedes the first ``<h2>`` is section ``""``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = [Section("")]
        self._heading: list[str] | None = None
        self._table_depth = 0
        self._cell: list[str] | None = None
        self._svg_depth = 0
        self._hidden: str | None = None  # inside <style>, <script> or <title>

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("style", "script", "title") and self._svg_depth == 0:
            self._hidden = tag
        elif tag == "svg":
            if self._svg_depth == 0:
                self.sections[-1].n_svg += 1
            self._svg_depth += 1
        elif tag == "h2":
            self._heading = []
        elif tag == "table":
            self._table_depth += 1
            if self._table_depth == 1:
                self.sections[-1].tables.append([])
        elif tag == "tr" and self._table_depth == 1:
            self.sections[-1].tables[-1].append([])
        elif tag in ("td", "th") and self._table_depth == 1:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == self._hidden:
            self._hidden = None
        elif tag == "svg":
            self._svg_depth = max(self._svg_depth - 1, 0)
        elif tag == "h2" and self._heading is not None:
            self.sections.append(Section(" ".join("".join(self._heading).split())))
            self._heading = None
        elif tag == "table":
            self._table_depth = max(self._table_depth - 1, 0)
        elif tag in ("td", "th") and self._cell is not None:
            self.sections[-1].tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._hidden is not None:
            return
        if self._heading is not None:
            self._heading.append(data)
        elif self._cell is not None:
            self._cell.append(data)
        elif self._svg_depth == 0 and data.strip():
            self.sections[-1].text.append(" ".join(data.split()))


def page_sections(dom: str) -> list[Section]:
    """The page cut at its ``<h2>`` headings (the first entry holds what comes before them)."""
    parser = _Sections()
    parser.feed(dom)
    parser.close()
    return parser.sections
