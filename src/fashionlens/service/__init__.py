"""HTTP service and web page: tagging, category paths and visual search (``fashionlens serve``).

:mod:`~fashionlens.service.pipeline` answers in process (decode, one forward per backbone, heads, index search),
:mod:`~fashionlens.service.batching` runs it on a few inference threads, and :mod:`~fashionlens.service.app` puts it
behind FastAPI with the page in ``static/``.
"""

from fashionlens.service.app import build_app, create_app

__all__ = ["build_app", "create_app"]
