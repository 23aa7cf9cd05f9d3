"""uvicorn's websockets-sansio protocol with two changes:
- a handshake it cannot parse (e.g. a request line over 8 KiB) is answered with the error response websockets
  prepared (414, 400...) and closed, instead of leaving the connection open without any answer (found by
  fuzzing: such clients hung until their own timeout);
- permessage-deflate compresses each large message once per worker for all sockets (`gateway.ws_deflate`);
- `send_shared_text` (in the ASGI scope's extensions under SHARED_TEXT): a text frame built once per worker for
  every socket with the same compression, written to the transport as it is (a snapshot to 1,000 sockets costs
  1,000 writes, not 1,000 trips through the ASGI stack and the frame encoder)."""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import ServerProtocol, State
from websockets.http11 import Request

from gateway import ws_deflate
from gateway.ws_deflate import SharedDeflateFactory

SHARED_TEXT = "upscaling.shared_text"  # scope["extensions"] key: `WebSocketProtocol.send_shared_text`


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol with shared compression that sends the rejection of an unparseable handshake."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # Nothing was received yet: the connection state is replaced before its first byte.
            self.conn = ServerProtocol(extensions=[SharedDeflateFactory()], max_size=self.config.ws_max_size,
                                       logger=logging.getLogger("uvicorn.error"))

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_complete and not self.transport.is_closing():
            output = self.conn.data_to_send()
            self.transport.write(b"".join(output))
            self.transport.close()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[SHARED_TEXT] = self.send_shared_text

    async def send_shared_text(self, text: str) -> bool:
        """Send `text` as the frame shared by every socket of the worker with the same compression
        (`ws_deflate.FRAMES`), after the same flow control as an ASGI send; False (nothing sent) when this
        connection cannot take it that way (not open, closing, other extensions): send it the ASGI way then."""
        await self.writable.wait()
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return False
        if self.conn.expect_continuation_frame:
            return False
        frame = ws_deflate.FRAMES.frame(text, self.conn.extensions)
        if frame is None:
            return False
        self.transport.write(frame)
        return True
