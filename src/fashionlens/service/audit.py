"""A saved catalogue audit behind the service, read-only: findings as JSON, the HTML report and its thumbnails.

The audit is read once at start-up; the only files ever served from its directory are ``report.html`` and the
thumbnails it names (``thumbs/<16 hex digits>.jpg``), so no request can reach another file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from fashionlens.audit import load_audit
from fashionlens.audit.report import TABLES

#: Most rows of one finding table returned by one request.
MAX_AUDIT_ROWS = 1000
_THUMBNAIL = re.compile(r"[0-9a-f]{16}\.jpg")

__all__ = ["MAX_AUDIT_ROWS", "TABLES", "AuditView"]


class AuditView:
    """The findings of the audit in ``directory``.

    Raises:
        DataError: ``directory`` is not a saved audit.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._audit = load_audit(directory)

    def findings(self, table: str | None, limit: int) -> dict[str, Any]:
        """The summary and the first ``limit`` rows of ``table`` (every table when ``None``)."""
        if table is not None and table not in TABLES:
            raise HTTPException(422, f"unknown audit table {table[:80]!r}; choose one of {', '.join(TABLES)}")
        names = [table] if table else list(TABLES)
        return {"summary": self._audit["summary"],
                **{name: {"total": len(self._audit[name]), "rows": self._audit[name][:limit]} for name in names}}

    def file(self, name: str) -> Path:
        """One of the audit's own files."""
        path = self.directory / name
        if not path.is_file():
            raise HTTPException(404, f"the audit has no {name}")
        return path

    def thumbnail(self, name: str) -> Path:
        """A thumbnail the report names; anything else is 404."""
        if not _THUMBNAIL.fullmatch(name):
            raise HTTPException(404, "no such audit thumbnail")
        return self.file(f"thumbs/{name}")
