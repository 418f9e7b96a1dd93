"""Prefect orchestration of the DataWriter and of sealing: the only module that imports
Prefect.

The flow drains each type with the same function as `skybuffer write --once`, one task
per type, with retries (exponential backoff with jitter). A run must finish within
``writer.budget_seconds``: the tasks stop taking new batches at a cooperative deadline
(Prefect's own timeout cannot interrupt blocking sync code), and the flow's
``timeout_seconds`` is the hard stop behind it. Never two runs at once, nor a run beside
any other DataWriter (``write --once``/``--loop``): the deployment's concurrency limit of
1 (CANCEL_NEW), plus the DataWriter lease (buffer/lease.py), which expires so a crashed
run cannot hold the slot forever, and fences every commit of the run's tasks. Every
run's outcome and figures go to Redis (observability/writer_stats.py), where the
long-lived serving process exports them.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from prefect import allow_failure, flow, get_run_logger, serve, task
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Failed, State
from prefect.tasks import exponential_backoff

from skybuffer.buffer.lease import Lease
from skybuffer.buffer.partitions import Partitions
from skybuffer.buffer.topology import connect
from skybuffer.constants import TYPES, Keys
from skybuffer.errors import DrainFailed, LeaseHeld, RunOverBudget, SkybufferError
from skybuffer.observability.exporter import serve_writer_metrics
from skybuffer.observability.writer_stats import record_run
from skybuffer.pipeline.datawriter import DataWriter
from skybuffer.pipeline.sealing import seal_ready
from skybuffer.settings import Settings, load_settings

HARD_STOP_MARGIN_SECONDS = 20.0
"""The cooperative deadline comes this long before the flow's hard timeout."""


def _settings() -> Settings:
    # Flow runs are subprocesses of the serving process: they read the same environment
    # (SKYBUFFER_DATA_DIR, SKYBUFFER_CONFIG, ...) that `skybuffer serve` exported.
    return load_settings()


def _retryable(task: Any, task_run: Any, state: State) -> bool:
    error = state.data
    return isinstance(error, SkybufferError) and error.retryable


def _budget_seconds() -> float:
    """The flow's hard timeout, read when the module loads: in the serving process and in
    each flow-run subprocess alike, from the same environment."""
    try:
        return _settings().writer.budget_seconds
    except SkybufferError:
        return 240.0


@task(
    name="drain",
    task_run_name="drain-{type_}{label}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retryable,
)
def drain_type_task(
    type_: str, deadline: float, lease_token: str, partition: int = 0, label: str = ""
) -> dict[str, Any]:
    """Drain one type (of one partition) until it is empty or the run's deadline (unix
    time) comes, under the lease the flow run holds. ``label``: the partition's name in
    the task run's name ("-p1")."""
    if time.time() >= deadline:
        raise RunOverBudget(f"{type_}: the run's budget was spent before this type's turn")
    writer = DataWriter.from_settings(_settings(), lease_token=lease_token, partition=partition)
    try:
        result = writer.drain_type(type_, deadline=time.monotonic() + (deadline - time.time()))
    finally:
        writer.close()
    if result.error is not None:
        raise DrainFailed(f"{type_}{label}: {result.error}")
    return asdict(result)


@dataclass
class Owned:
    """A partition whose lease this flow run holds."""

    number: int
    label: str
    client: Any
    keys: Keys
    lease: Lease


@flow(name="datawriter", retries=0, timeout_seconds=_budget_seconds())
def datawriter_flow() -> dict[str, Any] | State:
    """Drain every type into the lake once, within the budget, never concurrently with
    another writer of the same partition. A partitioned buffer: the partitions whose lease
    is free, drained in parallel (each one's types in turn)."""
    settings = _settings()
    log = get_run_logger()
    owned, held = _take_leases(settings)
    if not owned:
        return Cancelled(message=f"this run is skipped: {held}")
    started = time.time()
    try:
        deadline = started + settings.writer.budget_seconds - HARD_STOP_MARGIN_SECONDS
        results, failures, over_budget = _drain_all(deadline, owned)
    finally:
        for one in owned:
            one.lease.release()
    seconds = time.time() - started
    outcome = "timeout" if over_budget else "failure" if failures else "success"
    for one in owned:
        record_run(one.client, one.keys, outcome, seconds)
    rows = sum(r["rows"] for r in results.values())
    log.info("DataWriter run %s: %d rows in %.1fs.", outcome, rows, seconds)
    if outcome != "success":
        reason = "over its budget" if over_budget else f"failed: {failures}"
        return Failed(message=f"DataWriter run {reason}")
    return {"rows": rows, "seconds": round(seconds, 3), "types": results}


def _take_leases(settings: Settings) -> tuple[list[Owned], str]:
    """The partitions whose DataWriter lease is free now, taken; and why the others are
    not (a skipped run is recorded in each held partition's figures)."""
    partitions = Partitions.of_settings(settings.redis)
    owned, held = [], []
    for number in range(partitions.count):
        keys = partitions.keys(number)
        client = connect(settings.redis, settings.redis_dir, keys.prefix)
        what = "DataWriter flow run"
        lease = Lease(client, keys.writer_lease, settings.writer.lease_seconds, what)
        try:
            lease.acquire(wait=False)
        except LeaseHeld as exc:
            record_run(client, keys, "skipped", 0.0)
            held.append(str(exc))
            continue
        label = f"-{partitions.name(number)}" if partitions.partitioned else ""
        owned.append(Owned(number, label, client, keys, lease))
    return owned, "; ".join(held)


def _drain_all(
    deadline: float, owned: list[Owned]
) -> tuple[dict[str, dict[str, Any]], dict[str, str], bool]:
    """Each partition's types in turn, the partitions side by side; a failing type does
    not stop the others. Also says whether the budget ran out (a type stopped at the
    deadline, or never got its turn)."""
    futures: dict[str, PrefectFuture[dict[str, Any]]] = {}
    for one in owned:
        before: list[Any] = []
        for type_ in TYPES:
            future = drain_type_task.submit(
                type_,
                deadline,
                one.lease.token,
                one.number,
                one.label,
                return_state=False,
                wait_for=before,
            )
            futures[type_ + one.label] = future
            before = [allow_failure(future)]
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    over_budget = False
    for name, future in futures.items():
        try:
            results[name] = future.result()
            over_budget |= bool(results[name]["budget_exhausted"])
        except RunOverBudget as exc:
            failures[name], over_budget = str(exc), True
        except Exception as exc:  # noqa: BLE001 - one failing type must not stop the others
            failures[name] = str(exc)
    return results, failures, over_budget


def schedule_kwargs(schedule: str) -> dict[str, Any]:
    """`writer.schedule`: a number of seconds (interval) or a cron expression."""
    try:
        return {"interval": float(schedule)}
    except ValueError:
        return {"cron": schedule}


@flow(name="seal", retries=0)
def seal_flow() -> dict[str, Any] | State:
    """Seal the lake's hours that are ready and fold late events in (pipeline/sealing.py);
    skipped while another sealing run holds the lake's lock."""
    settings = _settings()
    try:
        report = seal_ready(settings)
    except LeaseHeld as exc:
        return Cancelled(message=f"this run is skipped: {exc}")
    figures = report.as_dict()
    get_run_logger().info(
        "Sealed %d hours, folded late events into %d, dropped %d duplicates in %.1fs.",
        figures["hours_sealed"],
        figures["late_folded"],
        figures["duplicates_dropped"],
        figures["seconds"],
    )
    return {k: v for k, v in figures.items() if k != "sealed"}


def serve_datawriter(settings: Settings) -> None:
    """`skybuffer serve`: the scheduled DataWriter, the hourly seal and their /metrics,
    until SIGTERM.

    The schedules stay active when this process stops (pause_on_shutdown=False): a
    restart of the serving process must not silently stop the DataWriter. Each deployment
    runs one flow run at a time (a second is cancelled, CANCEL_NEW); the DataWriter and a
    seal may run side by side (they share no lock: sealing only touches hours the writer
    has finished with, and a late file it writes meanwhile is left for the next seal).
    """
    os.environ["SKYBUFFER_DATA_DIR"] = str(settings.data_dir)
    if settings.config is not None:
        os.environ["SKYBUFFER_CONFIG"] = str(settings.config)
    serve_writer_metrics(settings)

    def one_at_a_time() -> ConcurrencyLimitConfig:
        return ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        )

    writer = datawriter_flow.to_deployment(
        name=settings.prefect.deployment,
        concurrency_limit=one_at_a_time(),
        entrypoint_type=EntrypointType.MODULE_PATH,
        **schedule_kwargs(settings.writer.schedule),
    )
    sealing = seal_flow.to_deployment(
        name=settings.prefect.seal_deployment,
        concurrency_limit=one_at_a_time(),
        entrypoint_type=EntrypointType.MODULE_PATH,
        **schedule_kwargs(settings.lake.seal_schedule),
    )
    assert isinstance(writer, RunnerDeployment) and isinstance(sealing, RunnerDeployment)
    serve(writer, sealing, pause_on_shutdown=False, limit=2, print_starting_message=False)
