"""Hypothesis profiles: `default` (CI, a few minutes on 2 cores) and `deep` (exploration).

Select with HYPOTHESIS_PROFILE=deep.  The stateful machines scale their example counts by the
profile's max_examples.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=100, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
