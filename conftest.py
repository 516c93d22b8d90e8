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
