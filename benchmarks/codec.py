"""Cost per job of the core on a worker's hot path, against hiredis' C parser.

Per job: parse a FETCH reply carrying a ~300-byte job, build the Job, produce the ACK bytes,
parse the ``+OK``. Prints the median microseconds per job over several rounds, and in the same
run the RESP parse of the same bytes by ``hiredis.Reader`` (alone, and followed by the
``json.loads`` that any Python worker has to do), with our ratio to each.

    .venv/bin/python benchmarks/codec.py [--jobs 20000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import hiredis

from faktory_core import ClientInfo, Connection
from faktory_core.commands import Ack, Fetch
from faktory_core.events import Fetched

JOB = {
    "retry": 25,
    "jid": "c2d9f3a81b7e4c05a6f1e2d3",
    "queue": "default",
    "jobtype": "SendInvoiceEmail",
    "args": [{"invoice_id": 48213, "customer": "alice@example.com", "locale": "en-GB"}, 3],
    "created_at": "2026-11-28T10:15:02.118Z",
    "enqueued_at": "2026-11-28T10:15:02.120233Z",
    "reserve_for": 600,
    "custom": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
}
BODY = json.dumps(JOB, separators=(",", ":")).encode()
FETCH_REPLY = b"$%d\r\n%s\r\n" % (len(BODY), BODY)
OK_REPLY = b"+OK\r\n"


def ready_connection() -> Connection:
    connection = Connection(ClientInfo(wid="bench0001", hostname="bench", pid=1))
    connection.receive_data(b'+HI {"v":2}\r\n+OK\r\n')
    connection.next_event()
    connection.data_to_send()
    return connection


def core_round(jobs: int) -> float:
    connection = ready_connection()
    fetch = Fetch(queues=("default",))
    reply = FETCH_REPLY
    ok = OK_REPLY
    start = time.perf_counter()
    for _ in range(jobs):
        connection.send(fetch)
        connection.data_to_send()
        connection.receive_data(reply)
        event = connection.next_event()
        assert isinstance(event, Fetched)
        assert event.job is not None
        connection.send(Ack(jid=event.job.jid))
        connection.data_to_send()
        connection.receive_data(ok)
        connection.next_event()
    return time.perf_counter() - start


def hiredis_round(jobs: int, *, decode_json: bool) -> float:
    reader = hiredis.Reader()
    reply = FETCH_REPLY
    ok = OK_REPLY
    loads = json.loads
    start = time.perf_counter()
    for _ in range(jobs):
        reader.feed(reply)
        body = reader.gets()
        if decode_json:
            loads(body)
        reader.feed(ok)
        reader.gets()
    return time.perf_counter() - start


def median_us(run: Callable[[int], float], jobs: int, rounds: int) -> float:
    run(jobs // 10)  # warm up
    return statistics.median(run(jobs) for _ in range(rounds)) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, job reply {len(FETCH_REPLY)} bytes, "
        f"{options.jobs} jobs x {options.rounds} rounds"
    )
    ours = median_us(core_round, options.jobs, options.rounds)
    c_parse = median_us(lambda n: hiredis_round(n, decode_json=False), options.jobs, options.rounds)
    c_json = median_us(lambda n: hiredis_round(n, decode_json=True), options.jobs, options.rounds)
    print(f"{'faktory_core (parse, Job, ACK bytes, +OK)':<44}{ours:8.2f} us/job")
    print(
        f"{'hiredis.Reader (RESP parse only)':<44}{c_parse:8.2f} us/job  "
        f"ours/hiredis = {ours / c_parse:.1f}x"
    )
    print(
        f"{'hiredis.Reader + json.loads':<44}{c_json:8.2f} us/job  "
        f"ours/(hiredis+json) = {ours / c_json:.1f}x"
    )
    print(f"target: at most 15 us/job -> {'met' if ours <= 15 else 'NOT met'}")


if __name__ == "__main__":
    main()
