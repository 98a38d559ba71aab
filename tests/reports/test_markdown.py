"""Markdown tables of results: rounding, numpy scalars, column alignment, and cells that contain a ``|``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashionlens.reports.markdown import format_value, key_values, records_table, table


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [(0.98765, 3, "0.988"), (np.float32(0.123456), 3, "0.123"), (np.float64(2.0), 1, "2.0"), (float("nan"), 3, "nan"),
     (3, 3, "3"), (np.int64(7), 3, "7"), (True, 3, "True"), ("Tshirts", 3, "Tshirts")],
)
def test_floats_are_rounded_and_everything_else_is_text(value: object, digits: int, text: str) -> None:
    assert format_value(value, digits) == text


def _cells(markdown: str) -> list[list[str]]:
    """Rows of cells, splitting on unescaped pipes as a markdown renderer does."""
    rows = []
    for line in markdown.splitlines():
        cells = line.replace("\\|", "\0").strip().strip("|").split("|")
        rows.append([cell.strip().replace("\0", "|") for cell in cells])
    return rows


def test_table_has_a_header_a_rule_and_one_row_per_record() -> None:
    frame = pd.DataFrame({"label": ["black", "a|b"], "f1": np.array([0.5, 0.123456], dtype=np.float32),
                          "support": [10, 3]})
    rows = _cells(table(frame, digits=2))
    assert rows == [["label", "f1", "support"], ["---", "---", "---"], ["black", "0.50", "10"], ["a|b", "0.12", "3"]]
    assert all(len(row) == 3 for row in rows)  # the pipe inside "a|b" did not make a fourth column


def test_key_values_and_records_tables() -> None:
    assert _cells(key_values({"mAP": 0.71234, "queries": 8}))[2:] == [["mAP", "0.712"], ["queries", "8"]]
    assert _cells(records_table([{"k": 1, "recall": 0.25}, {"k": 5, "recall": 0.875}], digits=1))[2:] == [
        ["1", "0.2"], ["5", "0.9"]]
