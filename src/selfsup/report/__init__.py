"""HTML reports of runs (``selfsup report``) and side-by-side comparisons (``selfsup compare``)."""

from selfsup.report.build import report
from selfsup.report.compare import compare
from selfsup.report.panels import Panel

__all__ = ["Panel", "compare", "report"]
