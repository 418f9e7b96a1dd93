"""The data dir: which one a command uses, whether a pipeline lives there, and its ports.

A pipeline's data dir holds everything it keeps (Redis's AOF, the spool, the lake,
Prefect's database, the stack's files) and ``pipeline.json``, written by the first
command that starts a service there. That record holds the ports chosen for the services
whose port setting is left unset: free loopback ports, chosen once, so that any number of
pipelines (other data dirs, tests, colleagues) run side by side on one machine with no
flags, and every later command of the data dir finds its services again. A port set
explicitly (option, environment, TOML) wins over the record and is not recorded.

Which data dir, unless ``--data-dir`` / ``SKYBUFFER_DATA_DIR`` / ``data_dir`` says: the
nearest ``var/`` that holds a pipeline, in the current directory or one of its parents
(as git finds ``.git``), else ``./var``, which only commands that start a pipeline create.
Read-only commands never create one: they say there is no pipeline there (``NoPipeline``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skybuffer.errors import ConfigError, NoPipeline, PortInUse
from skybuffer.privilege import private_dir, write_private

RECORD = "pipeline.json"
DEFAULT_NAME = "var"

PORTS: dict[str, tuple[str, str]] = {
    "redis": ("redis", "port"),
    "ingest_metrics": ("metrics", "ingest_port"),
    "writer_metrics": ("metrics", "writer_port"),
    "prefect": ("prefect", "port"),
    "prometheus": ("stack", "prometheus_port"),
    "alertmanager": ("stack", "alertmanager_port"),
    "redis_exporter": ("stack", "exporter_port"),
}
"""Each service's name in the record -> its setting (section, field)."""

TOPOLOGY_PORTS = ("redis_replica", "sentinel_1", "sentinel_2", "sentinel_3")
"""The other nodes of a local sentinel topology (buffer/sentinel.py): recorded like the
services above, chosen at the topology's first start, and without a setting of their own
(the primary's first port is ``redis``)."""
CLUSTER_PORTS = (
    *(f"cluster_node_{n}" for n in range(2, 7)),
    *(f"cluster_bus_{n}" for n in range(1, 7)),
)
"""The other nodes of a local cluster (buffer/cluster.py) and every node's bus port (the
first node has the ``redis`` port)."""


def default_data_dir(start: Path | None = None) -> Path:
    """The nearest ``var/`` holding a pipeline from ``start`` (the current directory)
    upwards, else ``start/var``."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_NAME
        if holds_pipeline(candidate):
            return candidate
    return here / DEFAULT_NAME


def holds_pipeline(path: Path) -> bool:
    """A data dir some command has started a pipeline in: its record, or (a data dir of a
    version before the record) the ACL file its managed Redis was started with. Nothing
    looser: the search goes up to the root, past directories named var that are not ours."""
    with contextlib.suppress(OSError):
        return (path / RECORD).is_file() or (path / "redis" / "users.acl").is_file()
    return False


def setting_name(service: str) -> str:
    section, field = PORTS[service]
    return f"{section}.{field} (SKYBUFFER_{section.upper()}__{field.upper()})"


# --- the record ---------------------------------------------------------------------------------
def recorded_ports(data_dir: Path) -> dict[str, int]:
    """The ports the data dir chose, by service ({} before its first start)."""
    return {name: port for name, port in _record(data_dir)["ports"].items() if name in PORTS}


def recorded_topology(data_dir: Path) -> tuple[str | None, dict[str, int]]:
    """The Redis mode `redis start --mode` recorded (None: none), and the ports of the
    topology's other nodes (TOPOLOGY_PORTS) chosen so far."""
    record = _record(data_dir)
    topology = (*TOPOLOGY_PORTS, *CLUSTER_PORTS)
    ports = {name: port for name, port in record["ports"].items() if name in topology}
    return record.get("redis_mode"), ports


def record_mode(data_dir: Path, mode: str) -> None:
    """Remember the data dir's Redis mode, for the commands that do not set one."""
    private_dir(data_dir)  # the directory only: its files are private as they are written
    with _locked(data_dir):
        record = _record(data_dir)
        if record.get("redis_mode") != mode:
            _write(data_dir, record["ports"], mode)


def _record(data_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((data_dir / RECORD).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return {"ports": {}}
    except ValueError as exc:
        raise ConfigError(
            f"{data_dir / RECORD} cannot be read ({exc}): restore it, or delete it to have "
            "new ports chosen at the next start"
        ) from None
    known = (*PORTS, *TOPOLOGY_PORTS, *CLUSTER_PORTS)
    ports = {name: int(port) for name, port in record.get("ports", {}).items() if name in known}
    mode = record.get("redis_mode")
    return {"ports": ports, **({"redis_mode": str(mode)} if mode else {})}


def claim(data_dir: Path, services: list[str], redis_dir: Path) -> dict[str, int]:
    """The recorded port of each of ``services``, choosing (and recording) a free one for
    each that has none yet. Creates the data dir. Safe when several commands start at once
    on a new data dir: the record is read and written under a lock, so all get the same."""
    private_dir(data_dir)  # the directory only: its files are private as they are written
    with _locked(data_dir):
        record = _record(data_dir)
        recorded = record["ports"]
        chosen: dict[str, int] = {}
        for service in services:
            taken = {*recorded.values(), *chosen.values()}
            chosen[service] = recorded.get(service) or _first_port(service, taken, redis_dir)
        if any(s not in recorded for s in services):
            _write(data_dir, {**recorded, **chosen}, record.get("redis_mode"))
    return chosen


def _first_port(service: str, taken: set[int], redis_dir: Path) -> int:
    """A new record adopts the port its running Redis already has (a data dir from a
    version before the record), else a free one."""
    if service == "redis":
        with contextlib.suppress(ValueError):
            return running_redis_port(redis_dir)
    return choose_port(taken)


def running_redis_port(redis_dir: Path) -> int:
    """The port in the managed Redis's endpoint file (ValueError when there is none)."""
    try:
        return int((redis_dir / "endpoint").read_text().strip().rsplit(":", 1)[1])
    except (OSError, IndexError):
        raise ValueError("no endpoint") from None


CHOSEN_RANGE = (20_000, 32_767)
"""Where recorded ports are chosen: below Linux's ephemeral range (32768-60999), so the
kernel never lends a recorded port to an outgoing connection while its service is down."""


def choose_port(taken: set[int], host: str = "127.0.0.1") -> int:
    """A port of CHOSEN_RANGE that is free now and not in ``taken``."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(*CHOSEN_RANGE)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    return free_port(host)


def _write(data_dir: Path, ports: dict[str, int], mode: str | None = None) -> None:
    record: dict[str, Any] = {
        "about": "skybuffer data dir: the ports chosen for its services (delete a line to "
        "have a new port chosen at the next start)",
        "ports": dict(sorted(ports.items())),
    }
    if mode:
        record["redis_mode"] = mode
    # Written beside and renamed over: readers take no lock, and must see the old record
    # or the new one, never a truncated file.
    temp = data_dir / f".{RECORD}.tmp"
    write_private(temp, json.dumps(record, indent=2) + "\n")
    os.replace(temp, data_dir / RECORD)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    fd = os.open(data_dir / ".pipeline.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- ports ----------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_free(
    host: str, port: int, service: str, data_dir: Path, grace_seconds: float = 0.0
) -> None:
    """Raise PortInUse, naming the setting to change, when another program holds ``port``.

    ``grace_seconds``: how long a port may stay held after its server died (the kernel
    keeps a killed server's closing connections bound to it for a moment)."""
    deadline = time.monotonic() + grace_seconds
    while not _free(host, port):
        if time.monotonic() >= deadline:
            raise PortInUse(port_in_use(host, port, service, data_dir))
        time.sleep(0.1)


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
    return True


def port_in_use(host: str, port: int, service: str, data_dir: Path) -> str:
    """The sentence for a port another program holds: which setting, and where it came from."""
    recorded = recorded_ports(data_dir).get(service) == port
    origin = f"recorded in {data_dir / RECORD}" if recorded else "set explicitly"
    return (
        f"{service} cannot listen on {host}:{port} ({origin}): another program holds it; set "
        f"{setting_name(service)} to a free port"
        + (", or delete its line from the record to have one chosen" if recorded else "")
    )


def require_pipeline(data_dir: Path, external_redis: bool) -> None:
    """For read-only commands: NoPipeline unless a pipeline lives in the data dir (an
    external Redis needs none)."""
    if external_redis or holds_pipeline(data_dir):
        return
    raise NoPipeline(
        f"no skybuffer pipeline at {data_dir}: start one there with `skybuffer run` "
        "(or `skybuffer redis start`), or name yours with --data-dir / SKYBUFFER_DATA_DIR"
    )


def port_of(value: int | None, service: str) -> int:
    """A port that must be known by now (claimed or recorded)."""
    if value is None:
        raise NoPipeline(
            f"no port is recorded for {service}: no pipeline has started in this data dir; "
            "start one with `skybuffer run` or `skybuffer redis start`"
        )
    return value
