"""The conformance kit: language-neutral vectors generated from the model, a vector runner, and a
wire runner (``syncref conformance``).  See docs/conformance.md."""
