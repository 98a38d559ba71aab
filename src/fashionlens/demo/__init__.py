"""``fashionlens demo`` (``make demo``): the main job end to end on the real shared data, with real figures.

:mod:`~fashionlens.demo.end_to_end` builds the manifests (the seeded splits the shipped models are trained on too),
then tags, classifies and searches, printing each step's figures and timings.
"""

from fashionlens.demo.end_to_end import (
    build_manifests,
    run_demo,
    step,
    street_to_shop,
)

__all__ = ["build_manifests", "run_demo", "step", "street_to_shop"]
