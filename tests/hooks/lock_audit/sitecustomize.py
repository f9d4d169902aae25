"""Loaded at start-up by a shim whose PYTHONPATH has this directory: see lock_audit.py."""

import os

if os.environ.get("DSPY_LOCK_AUDIT"):
    import lock_audit

    lock_audit.install(os.environ["DSPY_LOCK_AUDIT"])
