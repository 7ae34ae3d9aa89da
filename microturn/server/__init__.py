"""The live server (`microturn serve`): HTTP + WebSocket sessions over one Engine, and a
Python client (`microturn talk`). The wire protocol is docs/protocol.md."""

from microturn.server.app import ServerConfig, create_app
from microturn.server.protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "ServerConfig", "create_app"]
