"""vlaforge-client: talk to a vlaforge (or openpi-style) policy server with numpy, msgpack and websockets only.

from vlaforge_client import PolicyClient, ActionChunkBroker
"""

from vlaforge_client.broker import ActionChunkBroker, blend_overlap
from vlaforge_client.client import AuthenticationError, PolicyClient, ServerError
from vlaforge_client.msgpack_numpy import ProtocolError, observation_to_message, pack, unpack

__version__ = "0.1.0"

__all__ = [
    "ActionChunkBroker",
    "AuthenticationError",
    "PolicyClient",
    "ProtocolError",
    "ServerError",
    "blend_overlap",
    "observation_to_message",
    "pack",
    "unpack",
]
