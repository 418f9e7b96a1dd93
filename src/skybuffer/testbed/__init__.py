"""The testbed: realistic Jetstream events and a local Jetstream to serve them, no network.

A low layer (events in, bytes out): it imports nothing of sources, pipeline, ops or cli,
so benchmarks, chaos experiments, tests and the demo can all stand on it.

- ``generator`` (with ``records``, ``population``, ``atproto``): deterministic, seekable
  synthetic events calibrated on real traffic (``generate``; ``--source synthetic``
  streams them through sources/synthetic.py).
- ``replay_server`` (with ``event_file``): a file served over Jetstream's v1 /subscribe
  protocol (`skybuffer replay-server`).
"""
