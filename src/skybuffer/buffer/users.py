"""The ACL users of a managed Redis and their passwords.

The committed ``config/redis/users.acl`` names the users and what each may do
(``skybuffer``: the pipeline's commands on its key prefix; ``exporter``: read-only, what
redis_exporter sends; ``admin``: operations); it is rendered for each data dir with the
password hashes and the key pattern. Passwords come from the settings, else from files of
mode 0600 in the data dir, generated once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from skybuffer.errors import ConfigError
from skybuffer.privilege import write_private
from skybuffer.settings import RedisSettings

USERS = ("skybuffer", "exporter", "admin")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class AclUsers:
    """The users of one server (or of every node of a topology, sharing ``secrets_dir``)."""

    def __init__(self, settings: RedisSettings, secrets_dir: Path, users: tuple[str, ...]) -> None:
        self.settings = settings
        self.secrets_dir = secrets_dir
        self.names = users

    def credentials(self, user: str = "skybuffer") -> Credentials:
        """The password of ``user``: from settings, else the data dir (generated once)."""
        given = {
            "skybuffer": self.settings.password,
            "exporter": self.settings.exporter_password,
            "sentinels": self.settings.sentinel_password,
        }.get(user)
        if given is not None:
            return Credentials(user, given.get_secret_value())
        path = self.secrets_dir / f"{user}.password"
        if not path.exists():
            self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(path, secrets.token_urlsafe(32))
        return Credentials(user, path.read_text().strip())

    def render_acl(self, template: Path, directory: Path) -> Path:
        """Write ``directory``/users.acl from ``template`` with the password hashes and the
        key pattern."""
        acl = directory / "users.acl"
        write_private(acl, self.rendered(template))
        return acl

    def rendered(self, template: Path) -> str:
        """``template`` with the password hashes and the key pattern filled in."""
        if not template.exists():
            raise ConfigError(f"ACL template {template} is missing (it sits beside redis.conf)")
        values = {f"{u}_password": "#" + _sha256(self.credentials(u).password) for u in self.names}
        values["key_pattern"] = self.settings.prefix + "*"
        return template.read_text().format(**values)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
