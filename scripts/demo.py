"""Demo: a real Faktory server, driven byte by byte through faktory_core.

Starts a local Faktory v1.9.4 (the same way the tests do), then pushes, fetches, ACKs and FAILs
jobs over one blocking socket, printing every line that crosses the wire and the event the
sans-IO core made of it. Run it with ``make demo``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faktory_core import Ack, ClientInfo, Fail, Fetch, Info, InfoReply, Job, Push
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer


class TracingClient(BlockingClient):
    """Prints what goes out (C:) and what comes in (S:)."""

    def flush(self) -> None:
        data = self.connection.data_to_send()
        for line in data.splitlines():
            print(f"  C: {line.decode()[:110]}")
        if data:
            self.sock.sendall(data)

    def receive(self) -> bytes:
        data = super().receive()
        for line in data.splitlines():
            print(f"  S: {line.decode(errors='replace')[:110]}")
        return data


def main() -> None:
    print("Starting a local Faktory server (installing it first if needed)...")
    with FaktoryServer().start() as server:
        print(f"Faktory {server.url}, Web UI {server.web_url}\n")
        wid = os.urandom(6).hex()
        client = TracingClient(server.url, ClientInfo(wid=wid, hostname="demo", pid=os.getpid()))
        counter = iter(range(1, 100))

        def jid() -> str:
            return f"demo-job-{next(counter):03d}"

        print("Handshake:")
        print(f"  {client.handshake}\n")
        for jobtype, args in [("Greet", ["world"]), ("Divide", [1, 0])]:
            print(f"Push {jobtype}{args}:")
            client.ask(Push(job=Job.create(jobtype, args, jid_factory=jid, queue="demo")))
        print("\nFetch, ACK the first, FAIL the second (pipelined with the next FETCH):")
        first = client.ask(Fetch(queues=("demo",)))
        print(f"  {first}\n")
        job = getattr(first, "job", None)
        assert job is not None
        client.request(Ack(jid=job.jid), Fetch(queues=("demo",)))
        client.ask(Fail(jid="demo-job-002", errtype="ZeroDivisionError", message="by zero"))
        print("\nINFO:")
        info = client.ask(Info())
        assert isinstance(info, InfoReply)
        sets = info.info["faktory"]["sets"]
        print(f"  retries={sets['retries']} working={sets['working']} "
              f"processed={info.info['faktory']['total_processed']}")  # fmt: skip
        print(f"\nEND gets no reply; the server closes: {client.end()}")
    print("Server stopped.")


if __name__ == "__main__":
    main()
