"""The operator node daemon: listener -> drivers (per-task state machine) -> worker pool
-> signature exchange -> submitter. Design: ``docs/NODE_DAEMON.md``.

This package file stays import-light: worker processes import `oracle.node.worker`, which
must not pull web3 or aiohttp into them.
"""
