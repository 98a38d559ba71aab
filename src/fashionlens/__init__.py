"""fashionlens: fashion photo understanding -- attribute tagging, hierarchical categories, visual search."""

__version__ = "0.1.0"
