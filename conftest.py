"""Suite-wide fixtures: keep process-global engine hooks from leaking between tests.

At the repo root (not in tests/) so pytest puts the root on sys.path: tests/service
must not shadow the `service` package.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _restore_chain_executor():
    """Building a service installs the sandbox executor process-wide; put back what was there."""
    from engine.chain import get_executor, set_executor

    before = get_executor()
    yield
    set_executor(before)


@pytest.fixture
def extract_fails_mid_run(monkeypatch):
    """Make every extract fail with DataUnavailable("source vanished") after its first block
    (a source that disappears half-way): what is left on disk must be nothing."""
    from engine import extract as ex
    from engine.errors import DataUnavailable

    real = ex.iter_blocks

    def failing(plan, **kw):
        for n, block in enumerate(real(plan, **kw)):
            if n == 1:
                raise DataUnavailable("source vanished")
            yield block

    monkeypatch.setattr(ex, "iter_blocks", failing)


@pytest.fixture(autouse=True)
def _restore_process_limits():
    """Building a service sets the chain budget and path display process-wide; put back."""
    from engine.chain.budget import get_budget, set_budget
    from engine.security.redact import exposes_paths, set_expose_paths

    budget, expose = get_budget(), exposes_paths()
    yield
    set_budget(budget)
    set_expose_paths(expose)
