"""Data sources: decode images to uint8 (3, S, S) tensors and text to ``str``, nothing more.

Build one from a spec string with :func:`build_source`; :func:`list_datasets` lists the specs.
Random augmentation happens later, batched on the device (``selfsup.views``).
"""

# Importing the source modules registers their builders.
from selfsup.data import builtin, captions, folder, shapes, shards, text, wiki, wiki_topics  # noqa: F401
from selfsup.data.registry import build_source, list_datasets, register_dataset
from selfsup.data.source import DataError, DataSource

__all__ = ["DataError", "DataSource", "build_source", "list_datasets", "register_dataset"]
