"""Catalogue audit: mislabelled products, near-duplicates and broken or odd photos in a user's catalogue."""

from fashionlens.audit.duplicates import duplicate_table, similar_pairs
from fashionlens.audit.labels import find_label_issues, label_issue_table, out_of_fold_probabilities, taxonomy_breaks
from fashionlens.audit.photos import PhotoLimits, outlier_scores, photo_table
from fashionlens.audit.report import load_audit, write_audit
from fashionlens.audit.run import AuditConfig, CatalogueAudit, audit_catalogue

__all__ = [
    "AuditConfig",
    "CatalogueAudit",
    "PhotoLimits",
    "audit_catalogue",
    "duplicate_table",
    "find_label_issues",
    "label_issue_table",
    "load_audit",
    "out_of_fold_probabilities",
    "outlier_scores",
    "photo_table",
    "similar_pairs",
    "taxonomy_breaks",
    "write_audit",
]
