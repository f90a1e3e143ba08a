"""Redis online store: key layout, batched atomic tile writes, one-round-trip reads."""

from featurestore.online.keys import entity_key, tile_field
from featurestore.online.reader import OnlineReader
from featurestore.online.writer import OnlineWriter

__all__ = ["OnlineReader", "OnlineWriter", "entity_key", "tile_field"]
