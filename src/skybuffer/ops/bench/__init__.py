"""`skybuffer bench ...`: one module per benchmark, named as the command is.

``ingest`` (the ingester against one XADD per event and redis-benchmark), ``codec``
(Redis bytes per event, codec vs JSON), ``redis`` (the live Redis, one command per round
trip), ``jetstream`` (ingest from a local Jetstream-protocol WebSocket) and ``write`` (the
DataWriter's drain beside its in-run pyarrow ``reference``). What they
share (scratch Redis, machine description, checksums, plots) is in ops/harness.py.
"""
