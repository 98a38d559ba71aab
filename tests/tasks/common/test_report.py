"""The markdown report of a task's evaluation (``tasks/common/report.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fashionlens.tasks.common.report import MarkdownReport


@dataclass
class _Figures:
    split: str
    summary: dict[str, float] = field(default_factory=dict)


def test_report_holds_summaries_sections_and_curves_and_metrics_json_each_splits_summary(tmp_path: Path) -> None:
    evaluations = [_Figures("val", {"top1": 0.5}), _Figures("test", {"top1": 0.25})]
    report = MarkdownReport(tmp_path / "report", "A report", ["an intro line", ""])
    report.summaries(evaluations)
    report.add("## A section", "", "body", "")
    report.training_curves([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_top1": 0.3},
                            {"epoch": 2, "train_loss": 0.5, "val_loss": 0.9, "val_top1": 0.5}])
    path = report.save(evaluations)
    text = path.read_text()
    assert path == tmp_path / "report" / "report.md"
    assert text.startswith("# A report\n\nan intro line\n")
    assert text.index("## Summary (val)") < text.index("## Summary (test)") < text.index("## A section")
    assert "![training curves](training_curves.png)" in text and (tmp_path / "report" / "training_curves.png").is_file()
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == {"val": {"top1": 0.5},
                                                                              "test": {"top1": 0.25}}


def test_no_history_no_curves(tmp_path: Path) -> None:
    report = MarkdownReport(tmp_path, "A report")
    report.training_curves(None)
    assert "training curves" not in report.save([]).read_text()
    assert not (tmp_path / "training_curves.png").exists()
