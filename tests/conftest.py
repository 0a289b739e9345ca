"""Hypothesis profiles: `default` (CI, a few minutes on 2 cores), `deep` (exploration) and `mutation`.

Select with HYPOTHESIS_PROFILE=deep.  ICONTRACT_SLOW is switched on here, so the contracts that
scan (e.g. the model's state invariants over the engine's tables) run in every test.  The
stateful machines scale their example counts by the profile's max_examples.
"""

import os

# Scanning contracts (icontract.SLOW) are on in tests, off in benchmarks and production. Set before
# any project module (and so icontract's globals) is imported.
os.environ.setdefault("ICONTRACT_SLOW", "1")
# The engine's hot-path contracts (spec.contracts.hot: off in a default server) are on in every
# test, and in every server a test starts as a subprocess (they inherit the environment).
os.environ.setdefault("SYNCREF_CONTRACTS", "1")

from hypothesis import HealthCheck, Phase, settings

settings.register_profile("default", max_examples=100, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# `mutation`: the profile of the mutation runs (docs/mutation.md, `./run mutate`): few examples, a fixed
# seed (derandomize) and no example database, so a mutant's verdict is the same on every run and
# does not depend on what an earlier run stored.  No shrinking: a mutant is killed by the first failing
# example, and shrinking it (minutes on the shared machine) would only run into mutmut's CPU limit.
settings.register_profile("mutation", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck),
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
