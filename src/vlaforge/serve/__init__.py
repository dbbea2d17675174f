"""Serving: the msgpack wire protocol, PolicyServer, PolicyClient and ActionChunkBroker.

The client side (protocol, client, broker) needs only numpy, msgpack and websockets; nothing here
imports torch at module level.
"""

from vlaforge.serve.broker import ActionChunkBroker, blend_overlap
from vlaforge.serve.client import AuthenticationError, PolicyClient, RemotePolicy, ServerError
from vlaforge.serve.protocol import ProtocolError, pack, parse_observation, unpack
from vlaforge.serve.server import PolicyServer

__all__ = [
    "ActionChunkBroker",
    "AuthenticationError",
    "PolicyClient",
    "PolicyServer",
    "ProtocolError",
    "RemotePolicy",
    "ServerError",
    "blend_overlap",
    "pack",
    "parse_observation",
    "unpack",
]
