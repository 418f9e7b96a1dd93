"""The pages `run` and `stack up` print open on the installed builds (Debian's included).

Also covers: skybuffer.observability.pages (through the behaviour above).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest

from skybuffer.observability.pages import ALERTMANAGER_UI_SCRIPT, opens, pages_to_open
from skybuffer.settings import Settings, StackSettings

from .harness import CONFIG, stack_settings

pytestmark = pytest.mark.slow
NO_UI = "does not include a web"
"""Debian's Alertmanager answers / with a page that says it has no web application."""


def _body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200, url
        return str(response.read().decode("utf-8", errors="replace"))


def test_every_printed_page_opens_and_is_the_page_it_names(
    make_settings: Callable[..., Settings],
    run_stack: Callable[[Settings, StackSettings], dict[str, str]],
) -> None:
    conf = stack_settings(CONFIG)
    pages = pages_to_open(run_stack(make_settings(), conf))
    urls = {name: value.split()[0] for name, value in pages.items()}
    assert set(urls) == {"prometheus", "alertmanager", "redis_exporter"}
    for name, url in urls.items():
        assert opens(url), (name, url)

    prometheus = _body(urls["prometheus"])
    assert urls["prometheus"].endswith("/alerts") and "<title>" in prometheus

    alertmanager_base = f"http://127.0.0.1:{conf.alertmanager_port}"
    body = _body(alertmanager_base)
    if opens(alertmanager_base + ALERTMANAGER_UI_SCRIPT):  # an upstream build: its UI
        assert urls["alertmanager"] == alertmanager_base + "/#/alerts"
    else:  # Debian's build: / is a placeholder, so the API's alerts are printed instead
        assert NO_UI in body
        assert urls["alertmanager"] == alertmanager_base + "/api/v2/alerts"
        assert _body(urls["alertmanager"]).lstrip().startswith("[")
        assert "amtool" in pages["alertmanager"]
