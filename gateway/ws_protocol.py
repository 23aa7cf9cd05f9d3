"""uvicorn's websockets-sansio protocol with two changes:
- a handshake it cannot parse (e.g. a request line over 8 KiB) is answered with the error response websockets
  prepared (414, 400...) and closed, instead of leaving the connection open without any answer (found by
  fuzzing: such clients hung until their own timeout);
- permessage-deflate compresses each large message once per worker for all sockets (`gateway.ws_deflate`)."""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import ServerProtocol

from gateway.ws_deflate import SharedDeflateFactory


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
