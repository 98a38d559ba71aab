"""Markdown rendering of result tables for reports and docs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


def format_value(value: Any, digits: int = 3) -> str:
    """Floats to ``digits`` decimals, everything else as text."""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table of ``frame``."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(format_value(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def key_values(values: Mapping[str, Any], digits: int = 3) -> str:
    """A two-column markdown table of a mapping."""
    return table(pd.DataFrame({"metric": list(values), "value": [format_value(v, digits) for v in values.values()]}))


def records_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """A markdown table from a list of dicts sharing keys."""
    return table(pd.DataFrame(list(rows)), digits)
