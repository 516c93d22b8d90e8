"""EO Explorer app: settings, CLI, the served dashboard; ``launch`` and ``Map`` for scripts
and notebooks (imported lazily, so the CLI's light commands do not load Panel)."""

__all__ = ["Map", "Server", "launch"]


def __getattr__(name: str):
    if name in __all__:
        from app import launcher as _launcher

        return getattr(_launcher, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
