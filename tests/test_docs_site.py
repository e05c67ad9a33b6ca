"""The documentation site: built strictly with Sphinx, then opened in a real browser.

The build is the one CI and Read the Docs run: every warning is an error and every
cross-reference must resolve (``-n``). Then the built site is served over HTTP on loopback and
three pages (the home page, an API reference page, a guide) are opened in Debian's Chromium,
headless: each must render with furo's navigation, log nothing to the browser's console and
load every file it asks for. Their screenshots are copied to /tmp/docs-shots/.

One build serves every test of the module (about 10 s); each page takes about a second.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import attrs
import pytest
import yaml

# One build, shared by the module: its tests stay on one pytest-xdist worker.
pytestmark = [pytest.mark.docs_site, pytest.mark.xdist_group("docs_site")]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/docs-shots")
BUILD_TIMEOUT = 300.0
BROWSER_TIMEOUT = 60.0
WINDOW = (1280, 900)


# -- the build -----------------------------------------------------------------------------------


@attrs.frozen
class Build:
    html: Path
    returncode: int
    output: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Build:
    html = tmp_path_factory.mktemp("docs-site") / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html"]
    result = subprocess.run(
        [*command, str(DOCS), str(html)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    return Build(html, result.returncode, result.stdout + result.stderr)


def test_the_site_builds_without_a_warning(site: Build) -> None:
    warnings = [line for line in site.output.splitlines() if "WARNING" in line or "ERROR" in line]
    assert site.returncode == 0, "the strict build failed:\n" + "\n".join(warnings or [site.output])


def toctree_pages() -> list[str]:
    """The pages the home page's toctrees list, in order (``reference/index``...)."""
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    trees = re.findall(r"^```\{toctree\}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    return [
        line.strip()
        for tree in trees
        for line in tree.splitlines()
        if line.strip() and not line.startswith(":")
    ]


def test_the_home_page_lists_the_guides_the_reference_and_the_changelog() -> None:
    pages = toctree_pages()
    for page in ("quickstart", "shutdown", "library-authors", "reference/index", "changelog"):
        assert page in pages
    assert len(pages) == len(set(pages))


# -- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        message = (
            f"Debian's Chromium is not installed ({CHROMIUM}): `apt-get install chromium` "
            "(or scripts/install-browser) to run the docs site's smoke test"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site quietly, recording every request's path and status."""

    server: _Server

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = code if isinstance(code, int) else 0
        with self.server.lock:
            self.server.requests.append((urlsplit(self.path).path, status))

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
        self.lock = threading.Lock()
        self.requests: list[tuple[str, int]] = []

    def take_requests(self) -> list[tuple[str, int]]:
        with self.lock:
            taken, self.requests = self.requests, []
        return taken


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, _Server]]:
    """An HTTP server for ``directory`` on a free loopback port, and its base URL."""
    server = _Server(directory)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/", server
    finally:
        server.shutdown()  # returns once serve_forever has seen the request (poll_interval)
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the HTTP server's thread did not end"


@attrs.frozen
class Rendered:
    url: str
    title: str
    h1: str
    sidebar_links: list[str]
    ids: set[str]
    console: list[str]
    failed_requests: list[tuple[str, int]]
    screenshot: Path


class _Dom(HTMLParser):
    """What a page shows: its title, first heading, furo's sidebar links and element ids."""

    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
        | {"track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.sidebar_depth: int | None = None  # while inside furo's sidebar tree
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.text: dict[str, list[str]] = {"title": [], "h1": []}
        self.capturing: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if self.sidebar_depth is not None and tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])
        if tag in self.text and not self.text[tag]:
            self.capturing.append(tag)  # the first one only
        if tag in self.VOID:
            return
        self.depth += 1
        if self.sidebar_depth is None and "sidebar-tree" in attributes.get("class", "").split():
            self.sidebar_depth = self.depth

    def handle_endtag(self, tag: str) -> None:
        if tag in self.capturing:
            self.capturing.remove(tag)
        if tag in self.VOID:
            return
        if self.sidebar_depth == self.depth:
            self.sidebar_depth = None
        self.depth -= 1

    def handle_data(self, data: str) -> None:
        for tag in self.capturing:
            self.text[tag].append(data)


def open_page(
    chromium: Path, server: _Server, url: str, profile: Path, screenshot: Path
) -> Rendered:
    """Load ``url`` in headless Chromium: its DOM after the page's scripts ran, its console
    messages, the requests that failed, and a screenshot."""
    server.take_requests()
    result = subprocess.run(
        [
            str(chromium),
            "--headless",
            "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",  # a small /dev/shm (containers) must not crash it
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--hide-scrollbars",
            f"--screenshot={screenshot}",
            "--dump-dom",
            # Console messages (and uncaught exceptions) go to stderr as "...:CONSOLE..." lines.
            "--enable-logging=stderr",
            "--v=0",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
    )
    assert result.returncode == 0, f"chromium exited {result.returncode}:\n{result.stderr}"
    dom = _Dom()
    dom.feed(result.stdout)
    console = [
        line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line
    ]
    # Chromium asks every site for a favicon; a site without one answers 404.
    failed = [(path, code) for path, code in server.take_requests() if code >= 400]
    failed = [(path, code) for path, code in failed if path != "/favicon.ico"]
    return Rendered(
        url=url,
        title="".join(dom.text["title"]).strip(),
        h1="".join(dom.text["h1"]).strip(),
        sidebar_links=[urljoin(url, link).split("#")[0] for link in dom.links],
        ids=dom.ids,
        console=console,
        failed_requests=failed,
        screenshot=screenshot,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# The three pages, each with what its content must show.
PAGES = {
    "index": ("index.html", "faktory-sansio", "faktory-sansio"),
    "reference": (
        "reference/faktory_adapters.thread.html",
        "faktory_adapters.thread",
        "faktory_adapters.thread.Worker",
    ),
    "guide": ("shutdown.html", "The shutdown contract", "signals-and-exit-codes"),
}


@pytest.fixture(scope="module")
def rendered(
    site: Build, chromium: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Rendered]:
    assert (site.html / "index.html").is_file(), f"the build made no site:\n{site.output}"
    shots = tmp_path_factory.mktemp("docs-shots")
    pages = {}
    with serve(site.html) as (base, server):
        for name, (path, _, _) in PAGES.items():
            profile = tmp_path_factory.mktemp(f"chromium-{name}")  # fresh: no cache, no state
            pages[name] = open_page(chromium, server, base + path, profile, shots / f"{name}.png")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, page in pages.items():
        if page.screenshot.is_file():
            shutil.copyfile(page.screenshot, SHOTS / f"{name}.png")
    return pages


@pytest.mark.parametrize("name", PAGES)
def test_the_page_renders_with_its_navigation(name: str, rendered: dict[str, Rendered]) -> None:
    page = rendered[name]
    _, heading, element_id = PAGES[name]
    assert heading in page.h1, f"{page.url}: the first heading is {page.h1!r}"
    assert heading in page.title, f"{page.url}: the title is {page.title!r}"
    assert element_id in page.ids, f"{page.url}: no element #{element_id}"
    # furo's sidebar links to every page of the home page's toctrees.
    home = urljoin(page.url, "/")
    expected = [urljoin(home, f"{doc}.html") for doc in toctree_pages()]
    missing = [link for link in expected if link not in page.sidebar_links]
    assert not missing, f"{page.url}: the sidebar lacks {missing}; it has {page.sidebar_links}"


@pytest.mark.parametrize("name", PAGES)
def test_the_page_logs_nothing_and_loads_every_file(
    name: str, rendered: dict[str, Rendered]
) -> None:
    page = rendered[name]
    assert page.console == [], f"{page.url}: console messages:\n" + "\n".join(page.console)
    assert page.failed_requests == [], f"{page.url}: failed requests {page.failed_requests}"


@pytest.mark.parametrize("name", PAGES)
def test_the_page_has_a_screenshot(name: str, rendered: dict[str, Rendered]) -> None:
    assert png_size(rendered[name].screenshot) == WINDOW
    assert (SHOTS / f"{name}.png").is_file()


def test_the_checks_see_a_script_error_and_a_missing_file(chromium: Path, tmp_path: Path) -> None:
    # Were Chromium to stop logging console messages this way, the checks above would pass
    # on any page: this broken page proves they can fail.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "broken.html").write_text(
        "<!doctype html><title>broken</title><link rel='stylesheet' href='missing.css'>"
        "<h1>broken</h1><script>notDefinedAnywhere();</script>",
        encoding="utf-8",
    )
    with serve(tmp_path / "site") as (base, server):
        page = open_page(
            chromium, server, base + "broken.html", tmp_path / "profile", tmp_path / "shot.png"
        )
    assert page.h1 == "broken"
    assert any("Uncaught ReferenceError" in line for line in page.console), page.console
    assert page.failed_requests == [("/missing.css", 404)]


# -- Read the Docs -------------------------------------------------------------------------------


def test_read_the_docs_builds_this_site_as_strictly_with_the_docs_group() -> None:
    config = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text(encoding="utf-8"))
    assert config["version"] == 2
    assert config["sphinx"] == {"configuration": "docs/conf.py", "fail_on_warning": True}
    install = " ".join(config["build"]["jobs"]["install"])
    assert "pip install -e . --group docs" in install
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    docs_group = groups["dependency-groups"]["docs"]
    assert any(requirement.startswith("sphinx==") for requirement in docs_group)
