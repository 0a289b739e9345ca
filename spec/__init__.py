"""syncref's executable specification.

Pure Python, no I/O: the vocabulary (values, errors, canonical JSON, schema, query subset, auth,
compatibility, policy, transition tables, invariant predicates) and the model built on it
(reducers, delivery, the client apply model, the system machine, trace checks).  Reviewers read
it as the protocol; the reference engine is checked against it.
"""
