"""Request ids, JSON logs that carry them on every line, and Prometheus metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from strawberry.extensions import SchemaExtension

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "graphql_requests",
    "GraphQL operations by name and outcome",
    ["operation", "outcome"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "graphql_request_seconds",
    "GraphQL operation latency",
    ["operation"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
APPEND_BATCH = Histogram(
    "journal_append_batch_entries",
    "entries appended per batch",
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512, 1024),
)
JOURNAL_LENGTH = Gauge("journal_entries", "entries in the journal (tree size)", registry=REGISTRY)
DATABASE_UP = Gauge(
    "database_up", "1 unless the last call found the database unavailable", registry=REGISTRY
)
DATABASE_UP.set(1)
DATABASE_UNAVAILABLE = Counter(
    "database_unavailable", "calls that found the database unavailable", registry=REGISTRY
)
RATE_LIMITED = Counter("api_rate_limited", "requests refused with 429", ["role"], registry=REGISTRY)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": request_id_var.get(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _published_operation_names() -> frozenset[str]:
    from coalition.api.trusted import OPERATIONS_DIR

    pattern = re.compile(r"^\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)", re.M)
    return frozenset(
        name
        for path in OPERATIONS_DIR.glob("*/*.graphql")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    )


# Clients name their operations freely; a label per name would let anyone grow the
# metrics without bound. The published operations keep their names, the rest count
# together as ``other``.
PUBLISHED_OPERATIONS = _published_operation_names()


def operation_label(name: str | None) -> str:
    if name is None:
        return "anonymous"
    return name if name in PUBLISHED_OPERATIONS else "other"


class OperationMetrics(SchemaExtension):
    """Counts and times each operation by its label (see ``operation_label``)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        name = operation_label(self.execution_context.operation_name)
        result = self.execution_context.result
        outcome = "error" if result is not None and result.errors else "ok"
        REQUESTS.labels(name, outcome).inc()
        LATENCY.labels(name).observe(time.perf_counter() - started)


class JobMetrics(Collector):
    """The scheduled jobs as recorded in the database (``coalition.job_record``), so every
    process shows the same figures, whichever ran the job; refreshed at each scrape."""

    def __init__(self) -> None:
        self._records: list[Any] = []

    def update(self, records: list[Any]) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        last_run = GaugeMetricFamily(
            "coalition_job_last_run_timestamp_seconds",
            "when the job's last run started (Unix time)",
            labels=["job"],
        )
        duration = GaugeMetricFamily(
            "coalition_job_last_duration_seconds",
            "how long the job's last run took",
            labels=["job"],
        )
        outcome = GaugeMetricFamily(
            "coalition_job_last_outcome",
            "1 for the outcome of the job's last run (ok, refused, failed), else 0",
            labels=["job", "outcome"],
        )
        runs = CounterMetricFamily(
            "coalition_job_runs",
            "the job's runs by outcome; busy: attempts that found it running elsewhere",
            labels=["job", "outcome"],
        )
        for r in self._records:
            last_run.add_metric([r.job], r.last_started_us / 1e6)
            duration.add_metric([r.job], r.last_duration_us / 1e6)
            for name in ("ok", "refused", "failed"):
                outcome.add_metric([r.job, name], 1.0 if r.last_outcome == name else 0.0)
            for name, count in r.runs.items():
                runs.add_metric([r.job, name], count)
        yield from (last_run, duration, outcome, runs)


JOBS = JobMetrics()
REGISTRY.register(JOBS)
