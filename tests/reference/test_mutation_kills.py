"""Tests written to kill mutants that mutmut's run left alive (docs/mutation.md)."""
