"""The markdown report of a task's evaluation: ``report.md`` with its PNG figures, and ``metrics.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from fashionlens.io import write_json, write_text
from fashionlens.reports import markdown, plots


class SplitFigures(Protocol):
    """The figures of a model on one split (a task's evaluation)."""

    @property
    def split(self) -> str: ...

    @property
    def summary(self) -> Mapping[str, float]: ...


class MarkdownReport:
    """A report being written into ``out_dir``: the task adds its sections and figures, :meth:`save` writes it.

    Args:
        out_dir: The report folder (created; figures are written into it as they are added).
        title: The report's heading.
        intro: Lines under the heading.
    """

    def __init__(self, out_dir: str | Path, title: str, intro: Sequence[str] = ()):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = [f"# {title}", "", *intro]

    def add(self, *lines: str) -> None:
        """Append markdown lines."""
        self.lines += lines

    def summaries(self, evaluations: Sequence[SplitFigures]) -> None:
        """One ``Summary (<split>)`` section per evaluation."""
        for evaluation in evaluations:
            self.add(f"## Summary ({evaluation.split})", "", markdown.key_values(evaluation.summary), "")

    def training_curves(self, history: Sequence[Mapping[str, float]] | None) -> None:
        """The training curves figure of a run's history (nothing without one)."""
        if history:
            plots.plot_training_curves(history, self.out / "training_curves.png")
            self.add("![training curves](training_curves.png)", "")

    def save(self, evaluations: Sequence[SplitFigures]) -> Path:
        """Write ``metrics.json`` (each split's summary) and ``report.md``; returns the report's path."""
        write_json(self.out / "metrics.json", {e.split: dict(e.summary) for e in evaluations})
        report = self.out / "report.md"
        write_text(report, "\n".join(self.lines))
        return report
