"""The stack's secrets, as files of mode 0600 in ``{data_dir}/stack/secrets``: the Slack
webhook Alertmanager reads through ``api_url_file`` (a placeholder that fails visibly when
none is configured), and the password file redis_exporter logs in with as the read-only
``exporter`` ACL user. Neither is ever a process argument or in an environment."""

from __future__ import annotations

import json
from pathlib import Path

from skybuffer.errors import ConfigError
from skybuffer.privilege import SLACK_WEBHOOK_ENV, write_private
from skybuffer.settings import Settings, StackSettings

# Connection refused at once on loopback's discard port: notifications fail fast and
# visibly (alertmanager_notifications_failed_total) instead of going anywhere.
SLACK_PLACEHOLDER = "http://127.0.0.1:9/skybuffer-slack-webhook-not-configured"


class StackSecrets:
    """The secret files of one data dir's stack."""

    def __init__(self, settings: Settings, conf: StackSettings, directory: Path) -> None:
        self.settings = settings
        self.conf = conf
        self.secrets = directory

    def write_slack_url(self) -> None:
        write_private(self.secrets / "slack_webhook_url", self.slack_url() or SLACK_PLACEHOLDER)

    def slack_url(self) -> str | None:
        if self.conf.slack_webhook_url is not None:
            return self.conf.slack_webhook_url.get_secret_value().strip() or None
        if self.conf.slack_webhook_file is not None:
            try:
                return self.conf.slack_webhook_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(
                    f"stack.slack_webhook_file {self.conf.slack_webhook_file}: {exc.strerror}"
                ) from None
        return None

    def slack_state(self) -> str:
        try:
            written = (self.secrets / "slack_webhook_url").read_text().strip()
        except FileNotFoundError:
            written = None
        if written and written != SLACK_PLACEHOLDER:
            return "configured"
        return (
            "not configured: Alertmanager posts to a placeholder that fails; set "
            f"{SLACK_WEBHOOK_ENV} and run `skybuffer stack up` again"
        )

    def exporter_auth(self, redis_addr: str, nodes: list[str] | None = None) -> list[str]:
        """-redis.user/-redis.password-file flags (the file maps address -> password: the
        one of ``redis_addr``, and of each of a topology's ``nodes`` and sentinels, which
        all have the same exporter user)."""
        password = self._exporter_password()
        if password is None:
            return []
        path = self.secrets / "redis_exporter_passwords.json"
        addresses = [redis_addr, *(nodes or [])]
        write_private(path, json.dumps(dict.fromkeys(addresses, password)))
        return ["-redis.user=exporter", f"-redis.password-file={path}"]

    def _exporter_password(self) -> str | None:
        redis_settings = self.settings.redis
        if redis_settings.exporter_password is not None:
            return redis_settings.exporter_password.get_secret_value()
        if redis_settings.url or redis_settings.sentinels or redis_settings.cluster_nodes:
            return None  # an external Redis: its exporter password must be given
        from skybuffer.buffer.server import ManagedRedis

        server = ManagedRedis(redis_settings, self.settings.redis_dir)
        return server.credentials("exporter").password
