"""Generated mutants (mutmut, `support.mutate`) that do not change behaviour, each with the reason.

Keys are mutmut's mutant names (`module.function__mutmut_N`), valid for the commit recorded in
docs/mutation.md: editing a function renumbers its mutants, so the list is re-checked after each
measured run (`support.mutate` flags an entry that a test now kills).
"""

EQUIVALENT: dict[str, str] = {
}
