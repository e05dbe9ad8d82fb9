"""Shared pytest configuration. Helpers belong in ``raftkv.testing``, not here.

Hypothesis profiles, chosen with ``HYPOTHESIS_PROFILE`` (default ``dev``):

- ``dev``: quick local runs;
- ``ci``: what ``.ci/run`` uses; no example database, since every CI run starts clean;
- ``sweep``: long searches on demand, e.g. ``HYPOTHESIS_PROFILE=sweep pytest tests/sim``.

Every profile prints the reproduction blob of a failure and has no deadline: simulated clusters
take as long as they take, and wall-clock deadlines would make results depend on the machine.
"""

from __future__ import annotations

import os

from hypothesis import settings

_base = settings(deadline=None, print_blob=True)

settings.register_profile("dev", _base)
settings.register_profile("ci", _base, max_examples=200, database=None)
settings.register_profile("sweep", _base, max_examples=5_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
