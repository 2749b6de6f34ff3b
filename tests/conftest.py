"""Shared test configuration: the Hypothesis profiles.

`ci` (the default) keeps property tests small enough for the whole suite to run in a couple
of minutes on two cores; `dev` draws more examples. Choose one with HYPOTHESIS_PROFILE=dev.
Tests that set `max_examples` themselves keep their own count.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
