"""The Nostr bridge worker: ``bridge_outbox`` rows mirrored to relays (docs/bridge.md, ADR-0005).

* :mod:`.core` -- the sans-I/O decisions (rows in; publish, mark and failure actions out);
* :mod:`.mappings` -- provider capability -> NIP-89 kind 31990, receipt pointer -> kind 30078;
* :mod:`.config` -- the TOML config and command-line flags, checked into one value;
* :mod:`.worker` -- the asyncio shell: the SDK connection, the relay pool, metrics.
"""
