"""The deployment files of docs/deployment.md, checked as their tools would check them.

Each file is the fenced block right after a ``<!-- deploy-file: NAME -->`` comment. The
systemd unit goes through ``systemd-analyze verify`` (where it works); the Dockerfile, the
Compose file and the Kubernetes manifest are parsed. In every file, the supervisor's kill
timeout must outlast the worker's stop (``shutdown_timeout`` + ``abort_grace``, as that
file's command line sets them, plus a margin), TERM must reach the worker itself, and every
``faktory-worker`` command line is run with ``--check`` against a real Faktory, to prove that
this CLI takes its options.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from faktory_adapters._cli import _DEFAULTS, build_parser
from faktory_adapters.health import DEFAULT_STUCK_AFTER
from tests.support.server import FAKTORY_VERSION, FaktoryServer

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "deployment.md"

_DEPLOY_FILE = re.compile(
    r"^<!-- deploy-file: (?P<name>[^>]+?) -->\n```(?P<lang>[\w-]*)\n(?P<text>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
#: Each file the page must have, and the language of its fence.
EXPECTED = {
    "faktory-worker.service": "ini",
    "Dockerfile": "dockerfile",
    "compose.yaml": "yaml",
    "kubernetes.yaml": "yaml",
}
#: Beyond shutdown_timeout + abort_grace: the last replies and END take milliseconds when the
#: server answers, and up to 15 s when it does not (10 s for replies, 5 s for the heartbeat).
MIN_MARGIN = 10.0
COMMAND_TIMEOUT = 60.0
TERM_NAMES = ("SIGTERM", "TERM", "15")


def deploy_files() -> dict[str, tuple[str, str]]:
    """``{name: (fence language, text)}`` of the page's deploy files."""
    page = PAGE.read_text(encoding="utf-8")
    found: dict[str, tuple[str, str]] = {}
    for match in _DEPLOY_FILE.finditer(page):
        assert match["name"] not in found, f"two deploy files named {match['name']}"
        found[match["name"]] = (match["lang"], match["text"])
    return found


def deploy_file(name: str) -> str:
    return deploy_files()[name][1]


# -- the worker's command line ----------------------------------------------------------------


def worker_argv(argv: Sequence[str], where: str) -> list[str]:
    """``argv`` from the ``faktory-worker`` program on (after an init such as tini, if any)."""
    for index, word in enumerate(argv):
        if Path(word).name == "faktory-worker":
            return list(argv[index:])
    raise AssertionError(f"{where} does not run faktory-worker: {list(argv)}")


def stop_budget(argv: Sequence[str]) -> float:
    """``shutdown_timeout + abort_grace`` of this command line (the defaults if not given)."""
    options = build_parser().parse_args(list(argv[1:]))
    shutdown, grace = options.shutdown_timeout, options.abort_grace
    if shutdown is None:
        shutdown = _DEFAULTS["shutdown_timeout"]
    if grace is None:
        grace = _DEFAULTS["abort_grace"]
    return float(shutdown) + float(grace)


def assert_outlasts(timeout: float, argv: Sequence[str], setting: str) -> None:
    needed = stop_budget(argv) + MIN_MARGIN
    assert timeout >= needed, (
        f"{setting} is {timeout:g} s, but {shlex.join(argv)} needs shutdown_timeout + "
        f"abort_grace + {MIN_MARGIN:g} s = {needed:g} s to stop before it is SIGKILLed"
    )


def test_the_defaults_are_those_the_page_adds_up() -> None:
    assert (_DEFAULTS["shutdown_timeout"], _DEFAULTS["abort_grace"]) == (25, 3)
    assert stop_budget(["faktory-worker", "-r", "tasks"]) == 28
    assert stop_budget(["faktory-worker", "--shutdown-timeout=60", "--abort-grace", "5"]) == 65


# -- the page ---------------------------------------------------------------------------------


def test_the_page_has_every_deploy_file_in_its_language() -> None:
    found = deploy_files()
    assert {name: lang for name, (lang, _) in found.items()} == EXPECTED
    markers = re.findall(r"<!-- deploy-file:", PAGE.read_text(encoding="utf-8"))
    assert len(markers) == len(found), "a deploy-file marker not right above a fenced block"


# -- systemd ----------------------------------------------------------------------------------

_SYSTEMD_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def systemd_seconds(span: str) -> float:
    """A systemd time span (``45``, ``1min 30s``, ``infinity``) in seconds."""
    if span.strip() == "infinity":
        return float("inf")
    parts = re.findall(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, f"not a time span: {span!r}"
    assert "".join(f"{number}{unit}" for number, unit in parts) == re.sub(r"\s", "", span)
    assert all(unit in _SYSTEMD_UNITS for _, unit in parts), f"not a time span: {span!r}"
    return sum(float(number) * _SYSTEMD_UNITS[unit] for number, unit in parts)


def unit_file() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(deploy_file("faktory-worker.service"))
    return parser


def exec_start() -> list[str]:
    line = unit_file()["Service"]["ExecStart"]
    return shlex.split(line.lstrip("-@:+!"))


def test_systemd_time_spans_parse() -> None:
    assert systemd_seconds("45") == 45
    assert systemd_seconds("1min 30s") == 90
    assert systemd_seconds("infinity") == float("inf")
    with pytest.raises(AssertionError):
        systemd_seconds("4x5")


def test_the_systemd_unit_stops_the_worker_within_its_timeout() -> None:
    service = unit_file()["Service"]
    argv = exec_start()
    assert Path(argv[0]).is_absolute(), "ExecStart needs the program's absolute path"
    assert Path(argv[0]).name == "faktory-worker"
    assert service.get("KillSignal", "SIGTERM") in TERM_NAMES
    # control-group (the default) would TERM the worker processes of --processes directly
    # as well as through their supervisor: two TERMs, an abort at once.
    assert service.get("KillMode") == "mixed"
    assert service.get("SendSIGKILL", "yes") == "yes"
    timeout = service.get("TimeoutStopSec", service.get("TimeoutSec", "90"))  # systemd's default
    assert_outlasts(systemd_seconds(timeout), argv, "TimeoutStopSec")


def test_the_systemd_unit_restarts_but_not_on_bad_configuration() -> None:
    service = unit_file()["Service"]
    assert service.get("Restart") in ("always", "on-failure")
    assert "2" in service.get("RestartPreventExitStatus", "").split()
    assert systemd_seconds(service.get("RestartSec", "0.1")) >= 1  # no tight loop on exit 3


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (it comes with systemd)")
    trivial = tmp_path / "trivial" / "trivial.service"
    trivial.parent.mkdir()
    trivial.write_text(f"[Service]\nExecStart={sys.executable} -c pass\n", encoding="utf-8")
    works = _verify(analyze, trivial)
    if works.returncode != 0 or works.stderr.strip():
        pytest.skip(f"systemd-analyze verify does not work here: {works.stderr.strip()[:300]}")
    # verify checks that ExecStart's program exists: point it at this checkout's.
    program = exec_start()[0]
    installed = Path(sys.executable).with_name("faktory-worker")
    text = deploy_file("faktory-worker.service")
    assert text.count(program) == 1
    unit = tmp_path / "faktory-worker.service"
    unit.write_text(text.replace(program, str(installed)), encoding="utf-8")
    assert installed.exists(), f"{installed} is missing: pip install -e . makes it"
    result = _verify(analyze, unit)
    # A key it does not know or a value it cannot parse is only a warning on stderr.
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stderr


# -- Dockerfile -------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions: ``(INSTRUCTION, arguments)``, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in deploy_file("Dockerfile").splitlines():
        if line.strip().startswith("#") or not (pending or line.strip()):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def exec_form(instruction: str, arguments: str) -> list[str]:
    try:
        argv = json.loads(arguments)
    except json.JSONDecodeError:
        argv = None
    if not (isinstance(argv, list) and all(isinstance(word, str) for word in argv)):
        raise AssertionError(
            f"{instruction} {arguments}: the shell form runs /bin/sh as PID 1, which does not "
            f'pass TERM on; write the exec form, {instruction} ["faktory-worker", ...]'
        )
    return argv


def dockerfile_argv() -> list[str]:
    last = dict(dockerfile())
    entrypoint = exec_form("ENTRYPOINT", last["ENTRYPOINT"]) if "ENTRYPOINT" in last else []
    command = exec_form("CMD", last["CMD"]) if "CMD" in last else []
    return worker_argv([*entrypoint, *command], "the Dockerfile")


def test_the_dockerfile_runs_the_worker_as_pid_1_on_sigterm() -> None:
    instructions = dockerfile()
    assert instructions[0][0] == "FROM"
    base = re.fullmatch(r"python:(\d+)\.(\d+)\S*", instructions[0][1])
    assert base is not None, instructions[0]
    assert (int(base[1]), int(base[2])) >= (3, 11), instructions[0]
    assert dockerfile_argv()[0] == "faktory-worker"
    for instruction, arguments in instructions:
        if instruction == "STOPSIGNAL":
            assert arguments in TERM_NAMES


# -- Docker Compose ---------------------------------------------------------------------------

_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def go_duration(value: object) -> float:
    """A Compose duration (``45s``, ``1m30s``) in seconds."""
    text = str(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(a + b for a, b in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def compose() -> dict[str, Any]:
    document = yaml.safe_load(deploy_file("compose.yaml"))
    assert isinstance(document, dict)
    return document


def compose_argv() -> list[str]:
    worker = compose()["services"]["worker"]
    command = worker.get("command")
    if command is None:
        return dockerfile_argv()
    assert isinstance(command, list), "write command as a list: no shell, no splitting"
    return worker_argv(command, "the worker service")


def test_compose_runs_the_pinned_server_and_waits_for_it() -> None:
    services = compose()["services"]
    assert set(services) == {"faktory", "worker"}
    faktory, worker = services["faktory"], services["worker"]
    assert faktory["image"] == f"contribsys/faktory:{FAKTORY_VERSION}"
    assert faktory["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    # faktory-worker exits 3 when the server does not answer at its start.
    assert worker["depends_on"]["faktory"]["condition"] == "service_healthy"
    assert "@faktory:7419" in worker["environment"]["FAKTORY_URL"]
    assert "build" in worker


def test_compose_stops_the_worker_within_its_grace_period() -> None:
    worker = compose()["services"]["worker"]
    argv = compose_argv()
    assert worker.get("stop_signal", "SIGTERM") in TERM_NAMES
    grace = go_duration(worker.get("stop_grace_period", "10s"))  # Docker's default
    assert_outlasts(grace, argv, "stop_grace_period")


def test_go_durations_parse() -> None:
    assert go_duration("45s") == 45
    assert go_duration("1m30s") == 90
    with pytest.raises(AssertionError):
        go_duration("45 s")


# -- Kubernetes -------------------------------------------------------------------------------


def kubernetes() -> dict[str, Any]:
    """The Deployment of the manifest, its only document."""
    documents = [doc for doc in yaml.safe_load_all(deploy_file("kubernetes.yaml")) if doc]
    assert [doc["kind"] for doc in documents] == ["Deployment"]
    assert documents[0]["apiVersion"] == "apps/v1"
    deployment: dict[str, Any] = documents[0]
    return deployment


def worker_container() -> dict[str, Any]:
    (container,) = kubernetes()["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def kubernetes_argv() -> list[str]:
    container = worker_container()
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv, "without command, the image's own runs: name faktory-worker here"
    return worker_argv(argv, "the container")


def test_kubernetes_stops_the_worker_within_its_grace_period() -> None:
    deployment = kubernetes()
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = worker_container()
    # TERM goes to PID 1: faktory-worker itself, no shell in between.
    assert Path(container["command"][0]).name == "faktory-worker", container["command"]
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    assert isinstance(grace, int)
    assert_outlasts(grace, kubernetes_argv(), "terminationGracePeriodSeconds")


def test_kubernetes_probes_ask_the_worker_s_health_endpoints() -> None:
    container = worker_container()
    argv = kubernetes_argv()
    port = int(argv[argv.index("--health-port") + 1])
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    for kind, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[kind]["httpGet"]
        assert get["path"] == path, kind
        assert ports.get(get["port"], get["port"]) == port, kind
    # /livez fails after the loop has been stuck for DEFAULT_STUCK_AFTER: the probe's own
    # failures add to that, never shorten it; and a probe answers from a thread at once.
    live = container["livenessProbe"]
    assert live["failureThreshold"] >= 2
    assert live["timeoutSeconds"] >= 2
    assert DEFAULT_STUCK_AFTER + live["periodSeconds"] * live["failureThreshold"] <= 120
    (url,) = [item for item in container["env"] if item["name"] == "FAKTORY_URL"]
    assert "secretKeyRef" in url["valueFrom"], "keep the password in a Secret"


# -- every command line, run with --check -----------------------------------------------------

COMMAND_LINES: dict[str, Callable[[], list[str]]] = {
    "faktory-worker.service": exec_start,
    "Dockerfile": dockerfile_argv,
    "compose.yaml": compose_argv,
    "kubernetes.yaml": kubernetes_argv,
}

_STUB = '''\
from faktory_adapters import Jobs

jobs = Jobs()


@jobs.register("DeployFileCheck")
def deploy_file_check() -> None:
    """Stands for the application's handlers."""
'''


def write_stub_modules(argv: Sequence[str], directory: Path) -> None:
    """The modules named by ``-r``, each with a Jobs registry (a named attribute too)."""
    options = build_parser().parse_args(list(argv[1:]))
    for name in options.require:
        module, _, attribute = name.partition(":")
        path = directory.joinpath(*module.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in path.relative_to(directory).parents:
            if package != Path():
                (directory / package / "__init__.py").touch()
        code = _STUB + (f"\n{attribute} = jobs\n" if attribute else "")
        path.with_suffix(".py").write_text(code, encoding="utf-8")


@pytest.mark.server
@pytest.mark.parametrize("source", sorted(COMMAND_LINES))
def test_the_worker_command_line_passes_check(
    source: str, faktory_server: FaktoryServer, tmp_path: Path
) -> None:
    argv = COMMAND_LINES[source]()
    assert not any(word == "--url" or word.startswith("--url=") for word in argv)
    write_stub_modules(argv, tmp_path)
    check = [word for word in argv[1:] if word != "--check"]
    env = {key: value for key, value in os.environ.items() if key != "FAKTORY_PROVIDER"}
    env["FAKTORY_URL"] = faktory_server.url  # the file's own server is not here
    result = subprocess.run(
        [sys.executable, "-m", "faktory_adapters", *check, "--check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{shlex.join(argv)} --check:\n{result.stderr}"
    assert result.stdout.startswith(f"faktory-worker: ok: Faktory {FAKTORY_VERSION} at ")
