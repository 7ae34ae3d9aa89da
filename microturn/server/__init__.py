"""The live server (`microturn serve`): HTTP + WebSocket sessions over one Engine, and a
Python client (`microturn talk`). The wire protocol is docs/protocol.md."""

from microturn.server.app import PROTOCOL_VERSION, ServerConfig, create_app

__all__ = ["PROTOCOL_VERSION", "ServerConfig", "create_app"]
