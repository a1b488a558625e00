"""Files, the SQL index and the single write path for instances."""

from teleconsult.storage.store import InstanceStore

__all__ = ["InstanceStore"]
