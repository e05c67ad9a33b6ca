"""``make demo`` runs scripts/demo.py: run it as a subprocess and check what it claims."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, str(ROOT / "scripts" / "demo.py")]
# The demo itself takes about 5 s; a cold server install or a loaded CI machine take longer.
TIMEOUT = 180.0


def run_demo(*args: str) -> str:
    result = subprocess.run(
        [*DEMO, *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    return result.stdout


def summary(output: str, name: str) -> str:
    """The value a line of the demo's summary gives for ``name``."""
    match = re.search(rf"^  {re.escape(name)} +(\S+)", output, re.MULTILINE)
    assert match is not None, f"no summary line {name!r} in:\n{output}"
    return match[1]


def server_port(output: str) -> int:
    match = re.search(r"^Faktory tcp://127\.0\.0\.1:(\d+)$", output, re.MULTILINE)
    assert match is not None, output
    return int(match[1])


def assert_stopped(port: int) -> None:
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 5):
        pass


def test_demo_shows_the_shutdown_contract() -> None:
    output = run_demo()

    assert summary(output, "ACKed") == "20"
    assert summary(output, "FAILed by an error") == "3"
    assert summary(output, "aborted and cleaned up") == "1"
    assert summary(output, "worker exit code") == "1"
    # Aborting before the shutdown timeout would break the contract (a lower bound only).
    assert float(summary(output, "SIGTERM to exit")) >= 3.0
    assert re.search(r"^ +1 ExportReport +ShutdownAbort: ", output, re.MULTILINE), output
    assert re.search(r"^ +3 ChargeCard +PaymentDeclined: ", output, re.MULTILINE), output
    narrative = output[output.index("SIGTERM to the worker") : output.index("The server now")]
    assert "stopping" in narrative
    assert "cancelled: deleted" in narrative
    assert "the worker process exited with code 1" in narrative
    assert_stopped(server_port(output))


def test_wire_trace_shows_the_protocol() -> None:
    output = run_demo("--wire")

    assert '  C: PUSH {"jid":"demo-job-001","jobtype":"Greet"' in output
    assert "  C: ACK" in output
    assert "  C: FAIL" in output
    assert "  S: +OK" in output
    assert_stopped(server_port(output))


def test_ctrl_c_stops_the_worker_and_the_server() -> None:
    demo = subprocess.Popen(
        DEMO,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # As in a terminal: a runner started in the background may have SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert demo.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout or ()])
    reader.start()
    output = ""
    worker = 0
    try:
        deadline = time.monotonic() + TIMEOUT
        while not worker:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            output += line
            if match := re.search(r"^Started the worker .* pid (\d+):", line):
                worker = int(match[1])
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        if worker and Path(f"/proc/{worker}").exists():
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived the demo")
    reader.join(10)
    while not lines.empty():
        output += lines.get()
    assert "Interrupted." in output
    assert "The server is stopped." in output
    assert "Traceback" not in output
    assert_stopped(server_port(output))
