"""EO Explorer engine: catalog, query API, readers, chains. Usable from notebooks and scripts."""

from engine.collection import Collection

__all__ = ["Collection", "test_execute", "test_execute_times"]


def __getattr__(name: str):  # lazy: the sandbox client starts worker processes on use
    if name in ("test_execute", "test_execute_times"):
        from engine.sandbox import client

        return getattr(client, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
