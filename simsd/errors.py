"""Messages of the Python API in Python terms: ``draft_remasking='sequential'``, not CLI flags.

The rewording lives in pipeline.keywords, where ``build_processor`` uses it too; it is named
here for the API's callers.
"""
from pipeline.keywords import as_keywords, keyword_errors

__all__ = ["as_keywords", "keyword_errors"]
