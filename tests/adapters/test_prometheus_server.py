"""A real Prometheus scrapes real workers, evaluates the example alerting rules
(docs/examples/prometheus-alerts.yml) and answers the queries of docs/alerting.md.

Two workers (thread adapter) serve a real Faktory, each observed by a ``PrometheusMetrics`` on
a registry of its own, served over HTTP, and scraped every second as a pool of its own:

- ``faktory-workers`` runs the jobs of its queue: some succeed, some raise;
- ``faktory-stuck`` has one slot, holding a job that hangs, and was quieted.

On those metrics the rules load and evaluate without error; a copy of them without ``for:``
fires exactly the alerts the two pools deserve, and the file's own rules hold the same alerts
pending; every query of docs/alerting.md parses and returns series. ``promtool`` checks the
file, and unit tests of promtool's own (series made up over an hour of simulated time) check
each rule's thresholds and ``for:``: what a few seconds of real metrics cannot show.

Debian's prometheus package must be installed (``scripts/install-prometheus``, run by
``make test``): without it every test here fails, saying so.
"""

from __future__ import annotations

import contextlib
import copy
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from faktory_adapters import thread
from faktory_adapters.prometheus import PrometheusMetrics
from tests.support.adapters import WAIT
from tests.support.prometheus_server import (
    INSTALL_HINT,
    PrometheusServer,
    missing_binaries,
)
from tests.support.server import FaktoryServer

# One Prometheus and two workers serve the module's tests: they stay on one xdist worker.
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("prometheus_server")]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "examples" / "prometheus-alerts.yml"
ALERTING = ROOT / "docs" / "alerting.md"
OPERATIONS = ROOT / "docs" / "operations.md"
HOST = "127.0.0.1"
BUSY_POOL, STUCK_POOL = "faktory-workers", "faktory-stuck"

_PROMQL = re.compile(r"^```promql\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    # Failed rather than skipped: `make test` installs the package, and a skip would hide
    # that the rules and queries of the docs went unchecked.
    missing = missing_binaries()
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: {INSTALL_HINT}", pytrace=False)


def rule_file() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return rules


def alert_names() -> list[str]:
    return [rule["alert"] for group in rule_file()["groups"] for rule in group["rules"]]


def promql_blocks(page: Path) -> list[str]:
    return _PROMQL.findall(page.read_text(encoding="utf-8"))


# -- promtool ------------------------------------------------------------------------------------


def test_promtool_checks_the_rule_file() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(alert_names())} rules found" in output


def test_the_scrape_configuration_of_the_alerting_page_is_valid(tmp_path: Path) -> None:
    text = ALERTING.read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    (config,) = [block for block in blocks if "scrape_configs:" in block]
    (tmp_path / "prometheus.yml").write_text(config, encoding="utf-8")
    (tmp_path / "prometheus-alerts.yml").write_text(RULES.read_text(encoding="utf-8"))
    result = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],  # and the rule file it names
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Its pools are named as the rules expect.
    jobs = [scrape["job_name"] for scrape in yaml.safe_load(config)["scrape_configs"]]
    assert jobs
    assert all(re.fullmatch(r"faktory-.+", job) for job in jobs)


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """An input series of a promtool unit test: ``values`` in its notation (``0+2x60``: 0, 2,
    4... 61 samples, one per interval; ``1x10``: 1, eleven times)."""
    text = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


# The labels of a target: its scrape job (a pool) and its instance.
W1 = {"job": BUSY_POOL, "instance": "w1:9100"}
W2 = {"job": BUSY_POOL, "instance": "w2:9100"}


def ended(values: str, jobtype: str, outcome: str, errtype: str = "", **target: str) -> Any:
    labels = target or W1
    return series(
        "faktory_jobs_ended_total",
        values,
        **labels,
        queue="default",
        jobtype=jobtype,
        outcome=outcome,
        errtype=errtype,
    )


def running(values: str, jobtype: str = "Resize", **target: str) -> Any:
    labels = target or W1
    return series("faktory_jobs_running", values, **labels, queue="default", jobtype=jobtype)


def phase(values: str, name: str, **target: str) -> Any:
    return series("faktory_worker_phase", values, **(target or W1), phase=name)


def alert_test(alertname: str, *evals: tuple[str, list[dict[str, str]]]) -> list[Any]:
    """At each eval_time, exactly these alerts of ``alertname`` fire (their labels)."""
    return [
        {"eval_time": at, "alertname": alertname, "exp_alerts": [{"exp_labels": x} for x in fire]}
        for at, fire in evals
    ]


def latency_buckets(queue: str, per_minute: dict[str, int]) -> list[Any]:
    name = "faktory_job_queue_latency_seconds_bucket"
    return [
        series(name, f"0+{count}x60", **W1, queue=queue, le=le) for le, count in per_minute.items()
    ]


#: Each rule: series made up to make it fire, beside others that must not, and when it fires.
UNIT_TESTS: list[dict[str, Any]] = [
    {
        "input_series": [
            # Resize: 2 of 5 jobs fail (40%).
            ended("0+2x60", "Resize", "failed", "KeyError"),
            ended("0+3x60", "Resize", "succeeded"),
            # Email: a third aborted by shutdowns, which are not the job type's fault.
            ended("0+5x60", "Email", "aborted", "ShutdownAbort"),
            ended("0+10x60", "Email", "succeeded"),
            # Report: its one run failed, once: below the 3 failures that make an incident.
            ended("0x5 1x55", "Report", "failed", "KeyError"),
        ],
        "alert_rule_test": alert_test(
            "FaktoryJobTypeFailing",
            ("4m", []),  # failing, but not for 5 minutes yet
            ("10m", [{"jobtype": "Resize", "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # slow: 9 of 10 jobs waited between 300 and 600 s; fast: all under 300 s.
            *latency_buckets("slow", {"300.0": 1, "600.0": 10, "+Inf": 10}),
            *latency_buckets("fast", {"300.0": 10, "600.0": 10, "+Inf": 10}),
        ],
        "alert_rule_test": alert_test(
            "FaktoryQueueLatencyHigh",
            ("5m", []),
            ("15m", [{"queue": "slow", "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # faktory-workers: 10 slots, all busy but for an instant (the dip at 21m).
            series("faktory_worker_job_slots", "10x60", **W1),
            running("10x20 8 10x38"),
            # faktory-batch: half its slots busy.
            series("faktory_worker_job_slots", "10x60", job="faktory-batch", instance="b1:9100"),
            running("5x60", job="faktory-batch", instance="b1:9100"),
        ],
        "alert_rule_test": alert_test(
            "FaktoryWorkerSlotsFull",
            ("3m", []),
            ("30m", [{"job": BUSY_POOL, "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # w2: its jobs stopped ending at 10m, one still runs; w1's keep ending.
            running("1x60", "Report", **W2),
            ended("0+1x10 10x50", "Report", "succeeded", **W2),
            running("1x60"),
            ended("0+1x60", "Resize", "succeeded"),
        ],
        "alert_rule_test": alert_test(
            "FaktoryJobsStalled",
            ("20m", []),  # nothing ended for 10 minutes only
            ("40m", [{**W2, "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # w1 quiet from 10m on; w2 quiet for one minute only.
            phase("0x10 1x50", "quiet"),
            phase("0x10 1 0x49", "quiet", **W2),
        ],
        "alert_rule_test": alert_test(
            "FaktoryWorkerQuietTooLong",
            ("30m", []),
            ("45m", [{**W1, "phase": "quiet", "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # w1 stopping from 10m on, and never exits; w2 stops as it should.
            phase("0x10 1x30", "stopping"),
            phase("0x10 1 0x29", "stopping", **W2),
        ],
        "alert_rule_test": alert_test(
            "FaktoryWorkerNotExiting",
            ("15m", []),
            ("25m", [{**W1, "phase": "stopping", "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # w1: 2 of its 4 job connections down from 10m on; w2: one down for 2 minutes
            # (a server restart), then back.
            series("faktory_worker_job_connections", "4x40", **W1),
            series("faktory_worker_ready_job_connections", "4x10 2x30", **W1),
            series("faktory_worker_job_connections", "4x40", **W2),
            series("faktory_worker_ready_job_connections", "4x10 3x2 4x28", **W2),
        ],
        "alert_rule_test": alert_test(
            "FaktoryWorkerDisconnected",
            ("13m", []),  # down, but not for 5 minutes yet
            ("20m", [{**W1, "severity": "warning"}]),
        ),
    },
    {
        "input_series": [
            # faktory-workers: fine. faktory-critical: up, but its one worker is quiet.
            # faktory-batch: its target does not answer. node: not a pool of workers.
            series("up", "1x30", **W1),
            phase("1x30", "running"),
            series("up", "1x30", job="faktory-critical", instance="c1:9100"),
            phase("0x30", "running", job="faktory-critical", instance="c1:9100"),
            phase("1x30", "quiet", job="faktory-critical", instance="c1:9100"),
            series("up", "0x30", job="faktory-batch", instance="b1:9100"),
            series("up", "0x30", job="node", instance="n1:9100"),
        ],
        "alert_rule_test": alert_test(
            "FaktoryNoWorkerRunning",
            ("3m", []),
            (
                "10m",
                [
                    {"job": "faktory-batch", "severity": "critical"},
                    {"job": "faktory-critical", "severity": "critical"},
                ],
            ),
        ),
    },
]


def test_each_rule_fires_when_it_should_and_not_before_in_promtool_unit_tests(
    tmp_path: Path,
) -> None:
    tested = {case["alertname"] for test in UNIT_TESTS for case in test["alert_rule_test"]}
    assert tested == set(alert_names()), "every rule of the file has a unit test"
    # promtool compares annotations too: the copy it loads has none (they are checked where
    # real alerts fire, below).
    rules = rule_file()
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", **test} for test in UNIT_TESTS],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- a real Prometheus scraping real workers --------------------------------------------------


@attrs.frozen
class Scene:
    prometheus: PrometheusServer
    queue: str  # the busy pool's
    stuck_queue: str
    stuck_instance: str  # the stuck worker's target, host:port


def rules_firing_at_once(rules: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``rules`` without ``for:``, its alerts labelled ``copy="now"`` (so that their
    series differ from those of the file's own rules, loaded beside them)."""
    now = copy.deepcopy(rules)
    for group in now["groups"]:
        group["name"] += "-now"
        for rule in group["rules"]:
            rule.pop("for", None)
            rule.setdefault("labels", {})["copy"] = "now"
    return now


def prometheus_config(rule_files: list[Path], targets: dict[str, str]) -> str:
    """Scrape each target (``{scrape job: host:port}``) and evaluate the rules every second."""
    config: str = yaml.safe_dump(
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
    )
    return config


class ServedWorker:
    """A thread Worker serving ``queue`` on a thread, its metrics on a registry of its own
    served over HTTP on a free port of HOST."""

    def __init__(self, url: str, queue: str, concurrency: int) -> None:
        self.worker = thread.Worker(url=url, queues=[queue], concurrency=concurrency)
        registry = CollectorRegistry()
        self.worker.observe(PrometheusMetrics(registry))
        self._http, self._http_thread = start_http_server(0, addr=HOST, registry=registry)
        self.target = f"{HOST}:{self._http.server_port}"
        self._thread = threading.Thread(target=self.worker.serve, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # not serving yet: a set-up that failed
                self.worker.stop()
            self._thread.join(WAIT)
        self._http.shutdown()
        self._http.server_close()
        self._http_thread.join(WAIT)


def push(client: thread.Client, queue: str, **counts: int) -> None:
    for jobtype, count in counts.items():
        for n in range(count):
            # No retry: a failed job that came back (15 s later at the earliest) would be
            # counted twice.
            client.push(jobtype, [n], queue=queue, retry=0)


@pytest.fixture(scope="module")
def scene(
    faktory_server: FaktoryServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    directory = tmp_path_factory.mktemp("prometheus")
    queue = f"alerting-{uuid.uuid4().hex[:10]}"
    stuck_queue = f"alerting-stuck-{uuid.uuid4().hex[:10]}"
    # Undone last first: Prometheus stops, the hanging job returns, the workers stop.
    with contextlib.ExitStack() as stack:
        busy = ServedWorker(faktory_server.url, queue, concurrency=2)
        stack.callback(busy.stop)
        stuck = ServedWorker(faktory_server.url, stuck_queue, concurrency=1)
        stack.callback(stuck.stop)
        hanging, release = threading.Event(), threading.Event()
        stack.callback(release.set)

        @busy.worker.register("AlertingFine")
        def fine(n: int) -> None:
            pass

        @busy.worker.register("AlertingBroken")
        def broken(n: int) -> None:
            raise KeyError(n)

        @stuck.worker.register("AlertingHang")
        def hang(n: int) -> None:
            hanging.set()
            release.wait(WAIT * 4)  # until the module's tests are done

        now = directory / "alerts-now.yml"
        now.write_text(yaml.safe_dump(rules_firing_at_once(rule_file())), encoding="utf-8")
        config = prometheus_config([RULES, now], {BUSY_POOL: busy.target, STUCK_POOL: stuck.target})
        prometheus = PrometheusServer(config, directory)
        stack.callback(prometheus.stop)
        busy.start()
        stuck.start()
        prometheus.start()
        prometheus.wait_for(
            "both workers scraped",
            lambda: prometheus.value('count(up{job=~"faktory-.+"} == 1)') == 2,
        )

        def ended_in(queue: str, count: int) -> bool:
            return prometheus.value(f'sum(faktory_jobs_ended_total{{queue="{queue}"}})') == count

        with thread.Client(faktory_server.url) as client:
            push(client, stuck_queue, AlertingHang=1)
            assert hanging.wait(WAIT), "the stuck worker did not start its job"
            stuck.worker.quiet()
            # A counter's series appears with its first job, and rate() needs it to change
            # between two scrapes: the jobs come in two rounds, Prometheus seeing each.
            push(client, queue, AlertingFine=2, AlertingBroken=1)
            prometheus.wait_for("the first round's 3 jobs", lambda: ended_in(queue, 3))
            push(client, queue, AlertingFine=2, AlertingBroken=4)
            prometheus.wait_for("the second round's 6 jobs", lambda: ended_in(queue, 9))
        prometheus.wait_for(
            "the stuck worker quiet",
            lambda: prometheus.value(f'faktory_worker_phase{{job="{STUCK_POOL}", phase="quiet"}}'),
        )
        yield Scene(prometheus, queue, stuck_queue, stuck.target)


def test_prometheus_has_what_the_workers_counted(scene: Scene) -> None:
    prometheus = scene.prometheus

    def value(expr: str) -> float | None:
        return prometheus.value(expr)

    ended = f'faktory_jobs_ended_total{{queue="{scene.queue}"'
    assert value(f'sum({ended}, jobtype="AlertingFine", outcome="succeeded", errtype=""}})') == 4
    assert (
        value(f'sum({ended}, jobtype="AlertingBroken", outcome="failed", errtype="KeyError"}})')
        == 5
    )
    assert value(f'sum(faktory_jobs_started_total{{queue="{scene.queue}"}})') == 9
    latency = f'faktory_job_queue_latency_seconds_count{{queue="{scene.queue}"}}'
    assert value(latency) == 9
    assert value(f'sum(faktory_jobs_running{{queue="{scene.stuck_queue}"}})') == 1
    assert value(f'sum(faktory_jobs_running{{queue="{scene.queue}"}})') == 0
    assert value(f'faktory_worker_job_slots{{job="{BUSY_POOL}"}}') == 2
    assert value(f'faktory_worker_job_slots{{job="{STUCK_POOL}"}}') == 1
    assert value(f'faktory_worker_phase{{job="{BUSY_POOL}", phase="running"}}') == 1
    assert value(f'faktory_worker_phase{{job="{STUCK_POOL}", phase="quiet"}}') == 1
    assert value(f'faktory_worker_phase{{job="{STUCK_POOL}", phase="running"}}') == 0


def loaded_rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    return [
        {**rule, "group": group["name"]}
        for group in prometheus.api("rules")["groups"]
        for rule in group["rules"]
    ]


def test_the_rules_load_and_evaluate_without_error(scene: Scene) -> None:
    prometheus = scene.prometheus

    def evaluated() -> list[dict[str, Any]] | None:
        rules = loaded_rules(prometheus)
        # A rule's health is "unknown" until its first evaluation.
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else None

    rules = prometheus.wait_for("every rule evaluated", evaluated)
    expected = [
        (group["name"], rule["alert"]) for group in rule_file()["groups"] for rule in group["rules"]
    ]
    loaded = [(rule["group"], rule["name"]) for rule in rules if not rule["group"].endswith("-now")]
    assert loaded == expected
    assert len(rules) == 2 * len(expected)  # and the copy
    errors = [
        (rule["name"], rule["health"], rule.get("lastError"))
        for rule in rules
        if rule["health"] != "ok"
    ]
    assert not errors


def active_alerts(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = prometheus.api("alerts")["alerts"]
    return alerts


def identities(
    alerts: list[dict[str, Any]], state: str
) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """Each alert in ``state``: its name and the labels that say what it is about."""
    found = set()
    for alert in alerts:
        if alert["state"] != state:
            continue
        labels = dict(alert["labels"])
        name = labels.pop("alertname")
        labels.pop("severity")
        labels.pop("copy", None)
        found.add((name, frozenset(labels.items())))
    return found


def test_the_alerts_fire_for_the_pool_and_job_type_that_deserve_them(scene: Scene) -> None:
    stuck = {"job": STUCK_POOL, "instance": scene.stuck_instance}
    expected = {
        ("FaktoryJobTypeFailing", frozenset({"jobtype": "AlertingBroken"}.items())),
        ("FaktoryNoWorkerRunning", frozenset({"job": STUCK_POOL}.items())),
        ("FaktoryWorkerSlotsFull", frozenset({"job": STUCK_POOL}.items())),
        ("FaktoryJobsStalled", frozenset(stuck.items())),
        ("FaktoryWorkerQuietTooLong", frozenset({**stuck, "phase": "quiet"}.items())),
    }
    prometheus = scene.prometheus
    seen: dict[str, Any] = {}

    def as_expected() -> bool:
        alerts = seen["alerts"] = active_alerts(prometheus)
        now = [alert for alert in alerts if alert["labels"].get("copy") == "now"]
        own = [alert for alert in alerts if "copy" not in alert["labels"]]
        # The copy fires at once; the file's rules wait out their `for:`, pending.
        return identities(now, "firing") == expected and identities(own, "pending") == expected

    try:
        prometheus.wait_for("the expected alerts", as_expected)
    except AssertionError:
        alerts = seen.get("alerts", [])
        got = {state: identities(alerts, state) for state in ("firing", "pending")}
        raise AssertionError(f"expected {sorted(expected)}, got {got}") from None
    for alert in seen["alerts"]:
        for text in alert["annotations"].values():
            assert "error expanding" not in text
            assert "<no value>" not in text


def test_every_query_of_the_alerting_page_returns_series_from_real_workers(scene: Scene) -> None:
    queries = promql_blocks(ALERTING)
    assert len(queries) >= 8
    for query in queries:
        assert scene.prometheus.query(query), f"no series for:\n{query}"


def test_the_queries_of_the_operations_page_evaluate(scene: Scene) -> None:
    queries = promql_blocks(OPERATIONS)
    assert queries
    for query in queries:
        scene.prometheus.query(query)  # PrometheusError if it does not parse or evaluate


def test_every_metric_the_rules_and_queries_name_is_one_the_workers_serve(scene: Scene) -> None:
    served = set(scene.prometheus.api("label/__name__/values"))
    exprs = [rule["expr"] for group in rule_file()["groups"] for rule in group["rules"]]
    text = "\n".join(exprs + promql_blocks(ALERTING))
    named = set(re.findall(r"\bfaktory_[a-z_]+", text))
    assert named
    assert named <= served
