"""The network's present state over the lake: ``{type}_current`` views and ``accounts_current``.

The lake keeps every event as a row (creates, updates, deletes, account changes); these
views fold them into what the network holds now, which is what a researcher who must
honour deletions needs. The rules (docs/QUERYING.md explains them with examples):

* A record is ``(did, collection, rkey)``. Its latest event is the one with the greatest
  ``rev`` (TIDs: same-length base32 strings, so text order is time order within a repo,
  and a replayed old event never wins over a newer one however late it arrives). Equal
  revs are copies of one commit operation (upstream replays, host failover): a delete
  wins over a create or update of the same rev, then the newest ``time_us``, then the
  newest stream entry, so the choice is deterministic.
* A record whose latest event is a delete is absent; a later create (a greater rev) brings
  it back, with its new content.
* An account's state is its newest ``account`` event, by the relay's ``seq`` (one order for
  every Jetstream host that follows the same relay; ``time_us`` is each host's own clock)
  and then ``time_us``. While that state is ``active = false`` with status ``takendown``
  or ``deleted``, all the account's records are hidden. A takedown is reversible: a later
  ``active = true`` event shows the records again (the repository was kept). A deletion
  erased the repository: records whose latest event is not newer (by ``time_us``, the
  only clock commits and account events share) than the account's newest ``deleted``
  event stay gone even if the DID becomes active again; only what it writes afterwards
  shows. Other statuses (deactivated, suspended, desynchronized, throttled) hide nothing;
  ``accounts_current`` has the status for whoever wants to filter on it.
* ``other_current`` is one view over every collection of ``other`` (its identity and
  account rows are not records): the collections are an open set, so a view per
  collection would be a name made from data; filter on ``collection`` instead.

The views are plain SQL over the type views (no state is stored), so they are always as
current as the lake, and each query scans the type's files once.
"""

from __future__ import annotations

import duckdb

from skybuffer.constants import TYPES

ACCOUNTS_VIEW = "accounts_current"
WITHDRAWING = ("takendown", "deleted")
"""Account statuses that, with ``active = false``, remove an account's records."""
ERASING = "deleted"
"""The status whose records stay gone after the account becomes active again."""


def current_view(type_: str) -> str:
    """The name of a type's current-state view."""
    return f"{type_}_current"


def create_current_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``accounts_current`` and ``{type}_current`` for every type, over the type
    views ``con`` already has (query.connect)."""
    con.execute(accounts_sql())
    for type_ in TYPES:
        con.execute(current_sql(type_))


def accounts_sql() -> str:
    """One row per DID that has account events: its newest state, whether that state
    withdraws its records, and the ``time_us`` of its newest deletion (NULL: never)."""
    withdrawing = ", ".join(f"'{s}'" for s in WITHDRAWING)
    return f"""
CREATE VIEW {ACCOUNTS_VIEW} AS
SELECT did, active, status, time_us, event_time, relay_seq, relay_time,
       coalesce(active = false AND status IN ({withdrawing}), false) AS withdrawn,
       deleted_time_us
FROM (
  SELECT *, max(time_us) FILTER (WHERE active = false AND status = '{ERASING}')
              OVER (PARTITION BY did) AS deleted_time_us
  FROM other WHERE kind = 'account')
QUALIFY row_number() OVER (
  PARTITION BY did
  ORDER BY relay_seq DESC NULLS LAST, time_us DESC, stream_id DESC, stream_index DESC) = 1"""


def current_sql(type_: str) -> str:
    """The type's records as they are now: latest version by rev, deletes and withdrawn
    accounts applied. Columns: the type's own (``operation`` is create or update)."""
    return f"""
CREATE VIEW {current_view(type_)} AS
WITH latest AS (
  SELECT * FROM {type_}
  WHERE kind = 'commit'
  QUALIFY row_number() OVER (
    PARTITION BY did, collection, rkey
    ORDER BY rev DESC NULLS LAST, operation = 'delete' DESC, time_us DESC,
             stream_id DESC, stream_index DESC) = 1)
SELECT latest.* FROM latest
LEFT JOIN {ACCOUNTS_VIEW} AS account ON account.did = latest.did
WHERE latest.operation <> 'delete'
  AND NOT coalesce(account.withdrawn, false)
  AND (account.deleted_time_us IS NULL OR latest.time_us > account.deleted_time_us)"""
