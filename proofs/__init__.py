"""Z3 encodings of the model's transitions and their inductive proofs."""
