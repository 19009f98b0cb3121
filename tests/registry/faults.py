"""A TCP proxy in front of a real server that can drop dead at an exact request: after the
next `budget` HTTP requests it closes every connection and refuses new ones, as a server that
crashed would, until `revive()`. The requests it lets through reach the real server."""

from __future__ import annotations

import asyncio
import contextlib

REQUEST_LINE_END = b" HTTP/1.1\r\n"


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.budget: int | None = None  # None: unlimited
        self.dead = False
        self.stalled = False  # True: requests are taken but nothing is forwarded (a hung server)
        self.requests = 0
        self.upstream_bytes = 0  # all bytes forwarded to the server (any protocol, gRPC included)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, requests: int) -> None:
        self.budget, self.dead = requests, requests <= 0
        if self.dead:
            self._close_all()

    def revive(self) -> None:
        self.budget, self.dead, self.stalled = None, False, False

    async def stop(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.dead:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer, count=True), self._pump(up_reader, writer, count=False),
                             return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        while not self.dead:
            data = await reader.read(65536)
            if not data:
                break
            while self.stalled:
                await asyncio.sleep(0.05)
            if count:
                self.upstream_bytes += len(data)
                self.requests += data.count(REQUEST_LINE_END)
                if self.budget is not None:
                    self.budget -= data.count(REQUEST_LINE_END)
                    if self.budget < 0:  # this request is the first one past the budget: it never arrives
                        self.dead = True
                        self._close_all()
                        break
            writer.write(data)
            await writer.drain()
        if not self.dead:
            with contextlib.suppress(Exception):
                writer.write_eof()
