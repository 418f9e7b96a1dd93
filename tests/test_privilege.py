"""Which environment variables each kind of child process gets."""

from __future__ import annotations

from skybuffer.privilege import program_env, skybuffer_env

PARENT = {
    "PATH": "/usr/bin",
    "HOME": "/home/op",
    "SKYBUFFER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/secret",
    "skybuffer_stack__slack_webhook_url": "https://hooks.slack.com/services/T/B/nested",
    "SKYBUFFER_REDIS__PASSWORD": "pipeline-password",
    "SKYBUFFER_DATA_DIR": "/srv/skybuffer",
    "PREFECT_API_URL": "http://127.0.0.1:24999/api",
}


def test_skybuffer_children_keep_their_settings_but_not_the_webhook() -> None:
    env = skybuffer_env(PARENT)
    assert "SKYBUFFER_SLACK_WEBHOOK_URL" not in env
    assert "skybuffer_stack__slack_webhook_url" not in env  # pydantic-settings ignores case
    assert env["SKYBUFFER_REDIS__PASSWORD"] == "pipeline-password"
    assert env["SKYBUFFER_DATA_DIR"] == "/srv/skybuffer"
    assert env["PREFECT_API_URL"] == PARENT["PREFECT_API_URL"]


def test_third_party_programs_get_no_skybuffer_variable_at_all() -> None:
    env = program_env(PARENT)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/op",
        "PREFECT_API_URL": "http://127.0.0.1:24999/api",
    }
