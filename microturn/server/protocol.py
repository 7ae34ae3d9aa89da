"""The wire protocol's constants (docs/protocol.md), shared by the server and the Python
client so that the two cannot drift apart; the browser client mirrors them in static/conn.js."""

PROTOCOL_VERSION = 1
KIND_AUDIO = 0x01  # binary message: this byte, then PCM16 little-endian at 16 kHz
KIND_CAMERA = 0x02  # binary message: this byte, then one JPEG camera frame
