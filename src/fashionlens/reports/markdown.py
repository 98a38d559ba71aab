"""Markdown rendering of result tables for reports and docs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def format_value(value: Any, digits: int = 3) -> str:
    """Floats (numpy's too) to ``digits`` decimals, everything else as text."""
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(value: Any, digits: int) -> str:
    """A table cell: a ``|`` inside a value would start a new column, so it is escaped."""
    return format_value(value, digits).replace("|", "\\|")


def table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table of ``frame``."""
    header = "| " + " | ".join(_cell(c, digits) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def key_values(values: Mapping[str, Any], digits: int = 3) -> str:
    """A two-column markdown table of a mapping."""
    return table(pd.DataFrame({"metric": list(values), "value": [format_value(v, digits) for v in values.values()]}))


def records_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """A markdown table from a list of dicts sharing keys."""
    return table(pd.DataFrame(list(rows)), digits)
