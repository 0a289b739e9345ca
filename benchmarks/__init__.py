"""Stand-alone measurement scripts (docs/performance.md names each one and its method); run
them as files, e.g. ``.venv/bin/python benchmarks/restart.py``.  A package only so that
``mypy --strict`` checks them with the rest."""
