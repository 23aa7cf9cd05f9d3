"""uvicorn's websockets-sansio protocol, answering a handshake it cannot parse (e.g. a request line over 8 KiB)
with the error response websockets prepared (414, 400...) and closing, instead of leaving the connection open
without any answer (found by fuzzing: such clients hung until their own timeout)."""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol that sends the rejection of an unparseable handshake."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_complete and not self.transport.is_closing():
            output = self.conn.data_to_send()
            self.transport.write(b"".join(output))
            self.transport.close()
