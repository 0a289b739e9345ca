"""I/O edges of syncref: the command line today; the wire, the SDK and the bridge later."""
