"""The README, which is also the package's PyPI page: its code works when pasted, its commands
do what it says, and its links work from PyPI (absolute, to docs pages and headings that exist).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faktory_core import Job
from faktory_core.commands import Push
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
DOCS = ROOT / "docs"
# Where the docs site is published: page docs/NAME.md is DOCS_BASE + "NAME.html".
DOCS_BASE = "https://faktory-sansio.readthedocs.io/en/latest/"

TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", TEXT, re.DOTALL)

# -- the code ------------------------------------------------------------------------------------


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


def test_the_example_comes_first() -> None:
    """A reader sees the producer and worker on the first screen of the page."""
    line = TEXT[: TEXT.index("from faktory_adapters.asyncio import")].count("\n") + 1
    assert line <= 40, f"the example starts on line {line} of README.md"


def test_the_sans_io_example_runs() -> None:
    (block,) = [block for block in BLOCKS if "faktory_adapters" not in block]
    exec(compile(block, "README.md (core)", "exec"), {})


@pytest.fixture(scope="module")
def busy_server() -> Iterator[FaktoryServer]:
    """A server that already holds other people's jobs in the README's queue, "default"."""
    with FaktoryServer().start() as server, BlockingClient(server.url) as client:
        for index in range(20):
            jobtype = "SendGreeting" if index % 5 == 0 else "SomeoneElsesJob"
            job = Job.create(
                jobtype, [f"stranger {index}"], jid_factory=lambda: uuid.uuid4().hex, retry=0
            )
            client.ask(Push(job=job))
        yield server


def example() -> str:
    (block,) = [block for block in BLOCKS if "faktory_adapters.asyncio" in block]
    return str(block)


@pytest.mark.server
def test_the_producer_and_worker_example_runs(
    busy_server: FaktoryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAKTORY_URL", busy_server.url)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(example(), "README.md (asyncio)", "exec"), namespace)  # pushes the jobs
    worker = namespace["worker"]

    async def run_until_greeted() -> int:
        greeted: set[str] = set()
        both = asyncio.Event()

        @worker.use
        async def notice(context: Any, call_next: Callable[[], Awaitable[None]]) -> None:
            await call_next()
            if context.job.jobtype == "SendGreeting":
                greeted.add(context.job.args[0])
                if {"world", "you"} <= greeted:
                    both.set()

        serving = asyncio.create_task(worker.serve())
        await asyncio.wait_for(both.wait(), 15)
        worker.stop()
        return await asyncio.wait_for(serving, 15)

    assert asyncio.run(run_until_greeted()) == 0
    out = capsys.readouterr().out
    assert "Hello, world!" in out
    assert "Hello, you!" in out


@pytest.mark.server
def test_the_example_runs_with_the_commands_shown(
    busy_server: FaktoryServer, tmp_path: Path
) -> None:
    """The file the example names, run by the two commands under it (the worker in burst mode,
    so that it stops once the queue is empty)."""
    code = example()
    name = re.match(r"# (\w+\.py)\n", code)
    assert name, "the example's first line names its file"
    (tmp_path / name[1]).write_text(code)
    (block,) = [block for block in SH_BLOCKS if f"python {name[1]}" in block]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert commands == [["python", name[1]], ["faktory-worker", "-r", name[1].removesuffix(".py")]]

    script = Path(sys.executable).with_name("faktory-worker")  # installed with the package
    programs = {
        "python": [sys.executable],
        "faktory-worker": [str(script)]
        if script.exists()
        else [sys.executable, "-m", "faktory_adapters"],
    }
    env = {**os.environ, "FAKTORY_URL": busy_server.url}
    outputs = []
    for program, *arguments in commands:
        if program == "faktory-worker":
            arguments.append("--burst")
        done = subprocess.run(
            [*programs[program], *arguments],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "Hello, world!" in outputs[1]
    assert "Hello, you!" in outputs[1]


# -- the shape -----------------------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    match = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {heading}' section"
    return match[1]


def test_the_development_commands_are_shown() -> None:
    development = section(TEXT, "Development")
    assert re.search(r"^make demo ", development, re.MULTILINE)
    assert re.search(r"^make test ", development, re.MULTILINE)
    assert "CONTRIBUTING.md" in development
    assert CONTRIBUTING.is_file()


# -- the links -----------------------------------------------------------------------------------

_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>]*)>")
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_SLUG_DROP = re.compile(r"[^\w\u4e00-\u9fff\- ]")


def prose(markdown: str) -> str:
    """The text outside code blocks and code spans, where links can be."""
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def links(markdown: str) -> list[str]:
    text = prose(markdown)
    return [
        match[1] for pattern in (_INLINE_LINK, _REFERENCE, _AUTOLINK, _HTML)
        for match in pattern.finditer(text)
    ]  # fmt: skip


def anchor_levels() -> int:
    """The deepest heading level that gets an anchor on the site: docs/conf.py's
    ``myst_heading_anchors`` (without that setting MyST makes no heading anchors)."""
    conf = DOCS / "conf.py"
    if not conf.exists():
        return 3  # what the site is to be built with
    setting = re.search(r"^myst_heading_anchors\s*=\s*(\d+)", conf.read_text(), re.MULTILINE)
    return int(setting[1]) if setting else 0


def heading_slugs(markdown: str, levels: int) -> set[str]:
    """The anchors MyST gives a page's headings: GitHub's slugs (``myst_parser.slugs``) of
    the headings' text, code spans included; a repeated slug gets -1, -2..."""
    slugs: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", markdown)):
        if len(match[1]) > levels:
            continue
        title = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", match[2])
        title = title.replace("`", "")
        slug = _SLUG_DROP.sub("", title.lower().replace(" ", "-"))
        unique, count = slug, 1
        while unique in slugs:
            unique, count = f"{slug}-{count}", count + 1
        if slug:
            slugs.add(unique)
    return slugs


def link_problems(markdown: str, docs: Path, levels: int) -> list[str]:
    """What is wrong with a page's links, as the README must have them: absolute, and those
    into the docs site to a page of ``docs`` (and one of its headings) that exists."""
    problems = []
    for link in links(markdown):
        if not re.match(r"https?://", link):
            problems.append(f"{link}: not absolute (http or https)")
            continue
        if not link.startswith(DOCS_BASE):
            continue
        path, _, anchor = link.removeprefix(DOCS_BASE).partition("#")
        path = path or "index.html"  # the site's home page
        if not path.endswith(".html"):
            problems.append(f"{link}: not a page of the docs site (NAME.html)")
            continue
        page = docs / f"{path.removesuffix('.html')}.md"
        if not page.is_file():
            problems.append(f"{link}: no page {page.relative_to(docs.parent)}")
        elif anchor and anchor not in heading_slugs(page.read_text(), levels):
            problems.append(f"{link}: no heading of {page.name} has the anchor #{anchor}")
    return problems


def test_readme_links_are_absolute_and_lead_somewhere() -> None:
    assert any(link.startswith(DOCS_BASE) for link in links(TEXT))
    assert link_problems(TEXT, DOCS, anchor_levels()) == []


def test_the_link_check_catches_bad_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# The guide\n\n```sh\n# not a heading\n```\n\n## Signals and exit codes\n\n"
        "### `faktory-worker`\n\n#### Too deep\n\n## Signals and exit codes\n"
    )
    (tmp_path / "docs" / "index.md").write_text("# Home\n")
    markdown = f"""
Good: [home]({DOCS_BASE}), [a]({DOCS_BASE}guide.html),
[b]({DOCS_BASE}guide.html#signals-and-exit-codes),
[c]({DOCS_BASE}guide.html#signals-and-exit-codes-1) and
[d]({DOCS_BASE}guide.html#faktory-worker "title"), <https://example.com/>, `[e](e.md)`.

```sh
[f](f.md)
```

Bad: [g](docs/guide.md), [h](#the-guide), ![i](logo.png), [j]({DOCS_BASE}missing.html),
[k]({DOCS_BASE}guide.html#not-a-heading), [l]({DOCS_BASE}guide.html#too-deep),
[m]({DOCS_BASE}guide.md), <a href="/x">n</a>

[o]: ../CHANGELOG.md
"""
    assert link_problems(markdown, tmp_path / "docs", levels=3) == [
        "docs/guide.md: not absolute (http or https)",
        "#the-guide: not absolute (http or https)",
        "logo.png: not absolute (http or https)",
        f"{DOCS_BASE}missing.html: no page docs/missing.md",
        f"{DOCS_BASE}guide.html#not-a-heading: no heading of guide.md has the anchor "
        "#not-a-heading",
        f"{DOCS_BASE}guide.html#too-deep: no heading of guide.md has the anchor #too-deep",
        f"{DOCS_BASE}guide.md: not a page of the docs site (NAME.html)",
        "../CHANGELOG.md: not absolute (http or https)",
        "/x: not absolute (http or https)",
    ]


def test_contributing_links_lead_somewhere() -> None:
    """CONTRIBUTING.md is read in the repository: its relative links name files there."""
    for link in links(CONTRIBUTING.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
            continue
        assert (ROOT / link.partition("#")[0]).exists(), link
