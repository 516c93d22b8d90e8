"""The sandbox that runs users' Python functions on pixel arrays, never in-process.

``check_function`` refuses unsafe sources statically (AST allowlist + RestrictedPython);
``SandboxPool`` runs checked functions in disposable processes forked by a warm zygote
(namespaces, read-only mounts, rlimits, seccomp allow-list, per-call time/CPU/memory
limits), a process never running two different functions;
``capabilities()`` says what this machine enforces; ``test_execute`` tries a function
locally on simulated input; ``install_executor`` plugs the pool into chains.
"""

from engine.sandbox.check import (
    CheckedFunction,
    check_function,
    default_imports,
    set_default_imports,
)
from engine.sandbox.client import simulated_input, test_execute, test_execute_times
from engine.sandbox.executor import chain_executor, install_executor
from engine.sandbox.pool import (
    SandboxPool,
    capabilities,
    close_default_pool,
    configure,
    default_pool,
)

__all__ = [
    "CheckedFunction", "SandboxPool", "capabilities", "chain_executor", "check_function",
    "close_default_pool", "configure", "default_imports", "default_pool", "install_executor",
    "set_default_imports", "simulated_input", "test_execute", "test_execute_times",
]
