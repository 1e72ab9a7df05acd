"""A loopback TCP proxy in front of Redis that can silence its subscriber connections:
what a connection that stops delivering without dropping looks like to a client."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from tests.support import free_port


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.subscriber = False
        self.silenced = False


class SilencingProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``. :meth:`silence_subscribers`
    drops, from then on, every byte Redis sends on the connections that have subscribed
    so far; the connections stay open and what the client sends still arrives."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def silence_subscribers(self) -> int:
        with self._lock:
            silenced = [link for link in self._links if link.subscriber]
            for link in silenced:
                link.silenced = True
        return len(silenced)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for link in self._links:
                for sock in (link.client, link.server):
                    sock.close()

    def __enter__(self) -> SilencingProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _upstream(self, link: _Link) -> None:
        try:
            while data := link.client.recv(65536):
                if b"SUBSCRIBE" in data.upper():
                    link.subscriber = True
                link.server.sendall(data)
        except OSError:
            pass
        finally:
            link.server.close()

    def _downstream(self, link: _Link) -> None:
        try:
            while data := link.server.recv(65536):
                if not link.silenced:
                    link.client.sendall(data)
        except OSError:
            pass
        finally:
            link.client.close()
