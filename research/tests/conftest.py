"""The research tools' tests share the package's test helpers and fixtures: tests/ goes on the import path
(``from helpers import ...``), and tests/conftest.py's fixtures and hooks (``tiny_config``, one intra-op
thread, ``slow``/``gpu`` left out unless ``-m`` names them, ...) apply here too.

    python -m pytest research/tests      # from the repository root; not part of the default suite
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path.insert(0, str(TESTS))

# tests/conftest.py under a name of its own: pytest imports every conftest.py as the module ``conftest``
_spec = importlib.util.spec_from_file_location("robustft_tests_conftest", TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
globals().update({name: value for name, value in vars(_shared).items() if not name.startswith("__")})
