"""EO Explorer engine: catalog, query API, readers, chains. Usable from notebooks and scripts."""

from engine.collection import Collection

__all__ = ["Collection"]
