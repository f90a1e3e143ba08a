"""Redis online store: key layout, entity states per source partition, one-round-trip reads."""

from featurestore.online.keys import entity_key
from featurestore.online.reader import OnlineReader
from featurestore.online.writer import OnlineWriter

__all__ = ["OnlineReader", "OnlineWriter", "entity_key"]
