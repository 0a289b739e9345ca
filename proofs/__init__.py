"""Z3 encodings of the model's transitions and their inductive proofs (see docs/proofs.md).

``python -m proofs`` runs them all; :func:`proofs.api.run_all` is the programmatic entry point.
Layout: :mod:`proofs.core` (records, bounded lists), :mod:`proofs.encoding` (the database layer),
:mod:`proofs.server` (stale cursors, resume subscriptions, queues and durability, the row filter),
:mod:`proofs.client` (client apply), :mod:`proofs.props` / :mod:`proofs.props_server` (the
invariants in closed form), :mod:`proofs.theorems` (the proofs and their controls),
:mod:`proofs.render` (counterexamples as text).
"""
