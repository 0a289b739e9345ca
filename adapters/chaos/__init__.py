"""``syncref chaos``: a seeded, replayable whole-system chaos run against real ``syncref serve``.

The pieces, each usable alone:

* :mod:`.schedule` -- the nemesis schedule, a pure function of the seed (``plan(seed, profile)``):
  one seed names one schedule, so a failing run is replayed by its seed.
* :mod:`.proxy` -- a TCP proxy between the clients and the server that cuts every connection
  (mid-frame, wherever the bytes happen to be) and delays traffic on command.
* :mod:`.history` -- the recorded client histories and the Jepsen-style checker: lost write,
  duplicate apply, skipped event, non-monotonic read, confirmed read of a lost write, a view that
  differs from the server's at the same watermark, progress that did not resume.  Pure functions
  over plain data, tested with planted histories.
* :mod:`.relays` -- real ``nostr-relay`` processes (killed, frozen) and the ``syncref bridge`` worker.
* :mod:`.planted` -- server and bridge bugs patched into their processes, for the planted runs.
* :mod:`.runner` -- the run: a server process, writers with idempotent retries, subscribers that
  resume from persisted checkpoints with the SDK, presence, assignments and outbox, the nemeses,
  then the heal phase and the checks.

What a seed does *not* fix: the interleaving of the clients' operations with the nemeses (real
processes and sockets; the OS schedules them).  The schedule -- which fault, when, how long -- is
fixed, and so are the workload's choices; docs/reliability.md says how to replay.
"""
