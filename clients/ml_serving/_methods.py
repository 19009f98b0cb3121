"""Client methods declared in one line, and iteration over the pages of List calls.

`unary` and `server_stream` declare a method for an RPC that needs no hand-written
keywords: it takes the request message or the request's fields as keywords (protobuf's
constructors accept plain dicts for message and Struct fields, datetimes for Timestamps
and timedeltas for Durations). The RPC is named by picking it off the generated stub (`lambda stub:
stub.ListDecisions`) and resolved against the service's descriptor when the class is
created, so a misspelt RPC, or request and response types that do not match it, fail at
import rather than on the first call. `paged` declares an iterator over every item of a
List method's pages; `pages` iterates the pages themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

from ._base import AsyncClient

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Page = TypeVar("Page", bound=Message)
Item = TypeVar("Item")

RpcPicker = Callable[[Any], Any]
"""Takes one RPC off a stub: `lambda stub: stub.ListDecisions`."""


class _PathChannel:
    """Stands in for a channel while a stub is built to resolve an RPC: each of the stub's
    RPC attributes becomes the RPC's path, "/package.Service/Method"."""

    def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> str:
        return path

    unary_stream = stream_unary = stream_stream = unary_unary


def resolve_rpc(stub_type: Callable[[Any], Any], pick: RpcPicker) -> MethodDescriptor:
    """The descriptor of the RPC that `pick` takes off a stub of `stub_type`."""
    service, method = pick(stub_type(_PathChannel())).lstrip("/").split("/")
    return descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]


def _named(function: Any, owner: type, name: str, doc: str) -> Any:
    function.__name__, function.__qualname__, function.__doc__ = name, f"{owner.__qualname__}.{name}", doc
    return function


def _signature(request: Descriptor, response: Descriptor, server_streaming: bool) -> str:
    return f"{request.name} -> {'stream ' if server_streaming else ''}{response.name}"


class _Declared(Generic[Req, Resp]):
    """A client method declared from its RPC and the RPC's request and response types."""

    server_streaming: ClassVar[bool]

    def __init__(self, rpc: RpcPicker, request_type: type[Req], response_type: type[Resp]) -> None:
        self.rpc, self.request_type, self.response_type = rpc, request_type, response_type

    def __set_name__(self, owner: type[AsyncClient[Any]], name: str) -> None:
        self.owner, self.name = owner, name
        self.method = resolve_rpc(owner.stub_type, self.rpc)
        declared = _signature(self.request_type.DESCRIPTOR, self.response_type.DESCRIPTOR, self.server_streaming)
        actual = _signature(self.method.input_type, self.method.output_type, self.method.server_streaming)
        if declared != actual:
            raise TypeError(f"{owner.__name__}.{name} is declared {declared}, but {self.method.full_name} is {actual}")

    def _request(self, request: Req | None, fields: dict[str, Any]) -> Req:
        if request is None:
            return self.request_type(**fields)
        if fields:
            raise TypeError("pass either a request message or its fields as keywords, not both")
        return request


class unary(_Declared[Req, Resp]):
    """A method for a unary RPC without hand-written keywords: `await client.list_decisions(
    bandit="b", page_size=10)`, or `await client.list_decisions(request)`; both take `timeout=`."""

    server_streaming = False

    @overload
    def __get__(self, client: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, client: AsyncClient[Any], owner: type | None = None) -> Callable[..., Awaitable[Resp]]: ...

    def __get__(self, client: AsyncClient[Any] | None, owner: type | None = None) -> Any:
        if client is None:
            return self

        async def call(request: Req | None = None, /, *, timeout: float | None = None, **fields: Any) -> Resp:
            return await client._call(self.rpc(client.stub), self._request(request, fields), timeout)

        return _named(call, self.owner, self.name,
                      f"Calls {self.method.full_name}: takes a {self.request_type.__name__} or its fields as "
                      f"keywords, returns a {self.response_type.__name__}.")


class server_stream(_Declared[Req, Resp]):
    """Like `unary`, for a server-streaming RPC: the method returns an async iterator of responses."""

    server_streaming = True

    @overload
    def __get__(self, client: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, client: AsyncClient[Any], owner: type | None = None) -> Callable[..., AsyncIterator[Resp]]: ...

    def __get__(self, client: AsyncClient[Any] | None, owner: type | None = None) -> Any:
        if client is None:
            return self

        def call(request: Req | None = None, /, *, timeout: float | None = None, **fields: Any) -> AsyncIterator[Resp]:
            return client._stream(self.rpc(client.stub), self._request(request, fields), timeout)

        return _named(call, self.owner, self.name,
                      f"Streams {self.method.full_name}: takes a {self.request_type.__name__} or its fields as "
                      f"keywords, yields {self.response_type.__name__} messages.")


async def pages(list_page: Callable[..., Awaitable[Page]], *args: Any, page_token: str = "",
                **kwargs: Any) -> AsyncIterator[Page]:
    """Every page of a List method from `page_token` on (default: the first), following each
    page's next_page_token: `async for page in pages(bandits.list_bandits, page_size=100)`.
    The other arguments go to every call."""
    while True:
        page = await list_page(*args, page_token=page_token, **kwargs)
        yield page
        page_token = page.next_page_token  # type: ignore[attr-defined]
        if not page_token:
            return


class paged(Generic[Page, Item]):
    """An iterator over every item of every page of a List method, declared next to it:
    `iter_bandits = paged(list_bandits, lambda page: page.bandits)`. It takes the List
    method's arguments as keywords (page_token: where to start), e.g.
    `async for bandit in client.iter_bandits(page_size=100)`."""

    def __init__(self, list_method: Callable[..., Awaitable[Page]] | unary[Any, Page],
                 items: Callable[[Page], Iterable[Item]]) -> None:
        self.list_method, self.items = list_method, items

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner, self.name = owner, name

    @overload
    def __get__(self, client: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, client: AsyncClient[Any], owner: type | None = None) -> Callable[..., AsyncIterator[Item]]: ...

    def __get__(self, client: AsyncClient[Any] | None, owner: type | None = None) -> Any:
        if client is None:
            return self
        list_page = self.list_method.__get__(client, owner)

        async def iterate(*args: Any, **kwargs: Any) -> AsyncIterator[Item]:
            async for page in pages(list_page, *args, **kwargs):
                for item in self.items(page):
                    yield item

        return _named(iterate, self.owner, self.name,
                      f"Every item of every page of {list_page.__name__}, which takes the same arguments.")
