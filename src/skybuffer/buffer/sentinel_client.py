"""How clients reach a sentinel topology's primary: through the sentinels, with the
topology's ACL users.

Clients (``client()``) are redis-py's ``Sentinel(...).master_for(...)``: each new
connection asks the sentinels for the primary, so after a failover the pipeline's next
attempt reaches the new one. Meanwhile every call fails with ConnectionError (also a
demoted primary's READONLY, which redis-py turns into one), the transient outage the
ingester and the DataWriter already wait out. The processes themselves (nodes,
sentinels, start and stop) are buffer/sentinel.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from redis.sentinel import Sentinel

from skybuffer.buffer.server import no_retry
from skybuffer.buffer.users import USERS, AclUsers, Credentials
from skybuffer.errors import ConfigError
from skybuffer.settings import RedisSettings

NODE_USERS = (*USERS, "replica", "sentinel")
"""ACL users of a topology node: the standalone ones, replication's and the sentinels'."""
SENTINEL_SECRET = "sentinels"
"""The password of the sentinels themselves (clients and peer sentinels)."""
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)


class SentinelClients:
    """Clients of one topology, local (passwords in ``secrets_dir``) or external
    (``redis.sentinels``, the 'skybuffer' user's password in ``redis.password``)."""

    def __init__(
        self, settings: RedisSettings, secrets_dir: Path, addresses: list[tuple[str, int]]
    ) -> None:
        self.settings = settings
        self.secrets_dir = secrets_dir
        self.addresses = addresses
        """Where the sentinels listen."""

    @property
    def external(self) -> bool:
        return bool(self.settings.sentinels)

    def credentials(self, user: str = "skybuffer") -> Credentials:
        if self.external:
            if self.settings.password is None:
                raise ConfigError(
                    "redis.sentinels is set but redis.password is not: set "
                    "SKYBUFFER_REDIS__PASSWORD to the 'skybuffer' user's password"
                )
            return Credentials("skybuffer", self.settings.password.get_secret_value())
        return AclUsers(self.settings, self.secrets_dir, NODE_USERS).credentials(user)

    def sentinel(self) -> Sentinel:
        """A client of the sentinels (each call asks them in turn)."""
        timeouts = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "retry": no_retry()}
        password = self._sentinels_password()
        return Sentinel(self.addresses, sentinel_kwargs={**timeouts, "password": password})

    def _sentinels_password(self) -> str | None:
        """The local sentinels' password; an external deployment's if one is given
        (``redis.sentinel_password``)."""
        if not self.external:
            return self.credentials(SENTINEL_SECRET).password
        given = self.settings.sentinel_password
        return given.get_secret_value() if given is not None else None

    def client(self, user: str = "skybuffer", **kwargs: Any) -> redis.Redis:
        """A client of the current primary, for ``user``, that follows failovers: with the
        standalone client's timeouts and no retries of its own (see ``no_retry``)."""
        creds = self.credentials(user)
        return self.sentinel().master_for(
            self.settings.sentinel_master,
            username=creds.username,
            password=creds.password,
            socket_timeout=self.settings.socket_timeout_seconds,
            socket_connect_timeout=2,
            retry=no_retry(),
            **kwargs,
        )

    def primary(self) -> tuple[str, int] | None:
        """The primary the sentinels name now (None when none answers or knows one)."""
        try:
            return self.sentinel().discover_master(self.settings.sentinel_master)
        except CONNECTION_ERRORS:
            return None

    def is_serving(self) -> bool:
        """True when the sentinels name a primary and it answers."""
        try:
            return bool(self.client("admin").ping())
        except (*CONNECTION_ERRORS, redis.BusyLoadingError, ConfigError):
            return False

    def sentinel_states(self) -> list[dict[str, Any] | None]:
        """Each sentinel's SENTINEL MASTER reply for our primary (None: no answer)."""
        states: list[dict[str, Any] | None] = []
        for client in self.sentinel().sentinels:
            try:
                state = client.sentinel_master(self.settings.sentinel_master)
            except (*CONNECTION_ERRORS, redis.ResponseError):
                state = None
            states.append(state if isinstance(state, dict) else None)
        return states
