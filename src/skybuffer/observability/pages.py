"""The web page of each monitoring program that `run` and `stack up` print: one that opens.

``stack_up`` returns each program's base URL (what scripts and tests call the APIs on);
``pages_to_open`` turns those into the pages a person is shown.

Builds differ, so each page is asked for, not assumed. Upstream Prometheus shows its
alerts at ``/alerts``; Debian's package (2.42) ships only the classic UI, at
``/classic/alerts``, and ``/alerts`` is a 404. Upstream Alertmanager has a web UI at ``/``;
Debian's package has none (its ``/`` is a page saying so, ``/script.js`` is a 404), so the
URL printed is the API's list of alerts (JSON, which a browser shows) and ``amtool`` is
named for the rest.
"""

from __future__ import annotations

import urllib.error
import urllib.request

PROMETHEUS_ALERT_PAGES = ("/alerts", "/classic/alerts")
ALERTMANAGER_UI_SCRIPT = "/script.js"
"""The web UI's script: served only when the build has the UI."""
ALERTMANAGER_API_ALERTS = "/api/v2/alerts"


def pages_to_open(urls: dict[str, str]) -> dict[str, str]:
    """``stack_up``'s URLs with Prometheus's and Alertmanager's replaced by pages that open."""
    pages = dict(urls)
    if "prometheus" in pages:
        pages["prometheus"] = prometheus_page(pages["prometheus"])
    if "alertmanager" in pages:
        pages["alertmanager"] = alertmanager_page(pages["alertmanager"])
    return pages


def prometheus_page(base: str) -> str:
    """The first alerts page that opens, else the base URL (it redirects to the graph)."""
    return next((base + path for path in PROMETHEUS_ALERT_PAGES if opens(base + path)), base)


def alertmanager_page(base: str) -> str:
    """The web UI's alerts when there is a UI, else the API's alerts and a word on why."""
    if opens(base + ALERTMANAGER_UI_SCRIPT):
        return base + "/#/alerts"
    return (
        f"{base}{ALERTMANAGER_API_ALERTS} (this Alertmanager has no web UI: the firing "
        f"alerts as JSON; amtool alert query --alertmanager.url={base})"
    )


def opens(url: str) -> bool:
    """True when a GET of ``url`` ends in 200 (redirects followed)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
