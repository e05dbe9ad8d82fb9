"""The driver core: the decisions a member makes around the Raft core, as a pure object.

``DriverCore`` takes events and returns ``actions``; the server's asyncio adapter and the
deterministic simulator both run it (see ``core.py`` for the theory of operation).
"""

from raftkv.driver.actions import (
    Action,
    AppliedTo,
    Apply,
    Fail,
    FlushReadsSoon,
    Forward,
    LeaderChanged,
    Persist,
    RecordAttributes,
    Refusal,
    Resolve,
    Send,
    TakeSnapshot,
    Worker,
)
from raftkv.driver.core import ATTRIBUTES_MAGIC, CoreConfig, DriverCore

__all__ = [
    "ATTRIBUTES_MAGIC",
    "Action",
    "AppliedTo",
    "Apply",
    "CoreConfig",
    "DriverCore",
    "Fail",
    "FlushReadsSoon",
    "Forward",
    "LeaderChanged",
    "Persist",
    "RecordAttributes",
    "Refusal",
    "Resolve",
    "Send",
    "TakeSnapshot",
    "Worker",
]
