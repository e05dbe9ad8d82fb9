"""jepsen/ is not installed (it is a tool, not part of the wheel): import it from the checkout.

Only the jepsen package itself is made importable, through a folder holding a link to it: putting
the repo root on sys.path would also expose storage/ and cli/ under their generic names, which
the packaging test forbids.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LINK_DIR = Path(tempfile.mkdtemp(prefix="raftkv-jepsen-path-"))
(_LINK_DIR / "jepsen").symlink_to(ROOT / "jepsen", target_is_directory=True)
sys.path.insert(0, str(_LINK_DIR))
