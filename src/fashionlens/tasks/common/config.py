"""Task-config plumbing: the migration of keys written by earlier versions."""

from __future__ import annotations

from typing import Any


def fold_legacy_freeze(data: dict[str, Any]) -> dict[str, Any]:
    """A task config as plain data, with the ``finetune_freeze`` key of earlier versions folded into
    ``backbone.freeze``.

    Earlier versions kept the stages frozen while fine-tuning in a task-level ``finetune_freeze`` and wrote a dead
    ``backbone.freeze: all`` beside it (saved ``config.json`` files and YAMLs carry both); ``backbone.freeze`` now
    holds that setting. Every task config reads through here (its ``migrate_legacy`` hook, see
    :func:`fashionlens.config.from_dict`), so old models and YAMLs keep loading with the same meaning.
    """
    if "finetune_freeze" not in data:
        return data
    data = dict(data)
    freeze = data.pop("finetune_freeze")
    backbone = data.get("backbone")
    data["backbone"] = {**(backbone if isinstance(backbone, dict) else {}), "freeze": freeze}
    return data
