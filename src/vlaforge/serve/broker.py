"""`ActionChunkBroker` lives in the torch-free client package; re-exported here for convenience."""

from vlaforge_client.broker import ActionChunkBroker, blend_overlap

__all__ = ["ActionChunkBroker", "blend_overlap"]
