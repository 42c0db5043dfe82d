"""The reliability tests reuse the integration tests' helpers (hand-built customer_facts, signed
webhooks, the receiver on a real server)."""

from __future__ import annotations

import sys
from pathlib import Path

INTEGRATION = str(Path(__file__).resolve().parents[1] / "integration")
if INTEGRATION not in sys.path:
    sys.path.insert(0, INTEGRATION)
