"""``fashionlens export``: saved models as self-describing ONNX files, their verification against the PyTorch
model, and a small onnxruntime runner for them (:mod:`~fashionlens.export.onnx`)."""

from fashionlens.export.onnx import (
    KINDS,
    ExportResult,
    OnnxModel,
    export_onnx,
    model_kind,
    preprocessing_record,
    pytorch_outputs,
    verify_export,
)

__all__ = ["KINDS", "ExportResult", "OnnxModel", "export_onnx", "model_kind", "preprocessing_record",
           "pytorch_outputs", "verify_export"]
