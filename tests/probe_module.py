"""The probe's program (``images/probe/nachos_probe.py``), imported as a module for its unit tests.

It lives beside its image, not in the package: nachos-deploy never imports it."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import PROBE_DIR

_spec = importlib.util.spec_from_file_location("nachos_probe", PROBE_DIR / "nachos_probe.py")
assert _spec is not None and _spec.loader is not None
nachos_probe = importlib.util.module_from_spec(_spec)
sys.modules["nachos_probe"] = nachos_probe
_spec.loader.exec_module(nachos_probe)

ConfigError = nachos_probe.ConfigError
load_settings = nachos_probe.load_settings
json_problem = nachos_probe.json_problem
role_subjects = nachos_probe.role_subjects
# node:http's keepAliveTimeout (seconds), which the probe's webhook server keeps as the real channels do.
KEEP_ALIVE_TIMEOUT: float = nachos_probe.KEEP_ALIVE_TIMEOUT
