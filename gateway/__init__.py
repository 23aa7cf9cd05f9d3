"""Public gateway: gRPC API (port 50051) and the APEx-compatible HTTP/WebSocket bridge (port 8000)."""
