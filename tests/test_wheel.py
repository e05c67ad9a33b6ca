"""The package as a user gets it: the sdist built, the wheel built from it, their metadata
checked, and the wheel installed into a fresh virtual environment, away from the checkout,
where the quickstart runs against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import faktory_core
from tests.support.server import FaktoryServer
from tests.test_docs import blocks

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"
TIMEOUT = 300.0
NAME = f"faktory_sansio-{faktory_core.__version__}"

# One build and one install, shared by the module: its tests stay on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("wheel")


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n" + (
        result.stderr
    )
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from the unpacked sdist, as `python -m build` makes them."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    (found,) = dist.glob("*.tar.gz")
    return found


def test_twine_finds_the_metadata_complete(dist: Path) -> None:
    files = [str(path) for path in dist.iterdir()]
    output = run([sys.executable, "-m", "twine", "check", "--strict", *files], cwd=dist)
    assert output.count("PASSED") == 2, output


def test_the_wheel_holds_the_packages_license_and_typing_marker_only(wheel: Path) -> None:
    assert wheel.name == f"{NAME}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"faktory_core", "faktory_adapters", f"{NAME}.dist-info"}
    assert {"faktory_core/py.typed", "faktory_adapters/py.typed"} <= set(names)
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    assert f"{NAME}.dist-info/entry_points.txt" in names


def test_the_published_metadata_has_no_development_tools(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{NAME}.dist-info/METADATA").decode()
    metadata = Parser().parsestr(text)
    assert metadata["Version"] == faktory_core.__version__
    assert metadata["License-Expression"] == "MIT"
    assert set(metadata.get_all("Provides-Extra") or []) == {
        "gevent",
        "opentelemetry",
        "prometheus",
        "testing",
    }
    requires = metadata.get_all("Requires-Dist") or []
    assert [r for r in requires if "extra ==" not in r] == ["attrs>=23.1"]
    classifiers = metadata.get_all("Classifier") or []
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Documentation", "Changelog"}
    # The package's page is the README, whose links tests/test_readme.py checks are absolute.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert metadata.get_payload().strip() == readme.strip()


def test_the_sdist_holds_what_a_rebuild_needs(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO"} <= names
    assert "faktory_core/__init__.py" in names
    assert not [name for name in names if name.startswith((".venv", ".git/"))]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel (and its dependencies) installed."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv)
    run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], cwd=venv)
    return venv


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment with nothing that would lead Python back to the checkout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def test_the_installed_wheel_imports_from_the_environment(installed: Path, tmp_path: Path) -> None:
    python = str(installed / "bin" / "python")
    where = run(
        [python, "-c", "import faktory_adapters, faktory_core; print(faktory_core.__file__)"],
        cwd=tmp_path,
        env=user_env(),
    )
    assert Path(where.strip()).is_relative_to(installed)
    version = run([str(installed / "bin" / "faktory-worker"), "--version"], cwd=tmp_path)
    assert faktory_core.__version__ in version


@pytest.mark.server
def test_the_quickstart_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    python = str(installed / "bin" / "python")
    ran = 0
    with FaktoryServer().start() as server:
        env = user_env(FAKTORY_URL=server.url, PYTHONUNBUFFERED="1")
        for block in blocks(QUICKSTART):
            if block.file == "":
                continue
            if block.file is not None:
                (tmp_path / block.file).write_text(block.code, encoding="utf-8")
                continue
            script = tmp_path / f"quickstart_line_{block.line}.py"
            script.write_text("\n" * block.line + block.code, encoding="utf-8")
            output = run([python, str(script)], cwd=tmp_path, env=env)
            ran += 1
            if "worker.run()" in block.code:
                assert "Hello, world!" in output
    assert ran >= 2
