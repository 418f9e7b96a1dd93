"""`skybuffer chaos ...`: one module per experiment, named as the command is.

``memory`` (fill Redis past its limit: noeviction vs allkeys-lru), ``restart`` (SIGKILL
mid-write, both fsync modes), ``sustained`` (steady load for minutes) and ``forget``
(Redis forgets its last seconds mid-run). What they share is in ops/harness.py.
"""
