"""ml_serving clients against their contracts, without a server: each declared method names an RPC
of its service with the RPC's own types, every RPC is reachable, every List RPC has a page iterator."""

from __future__ import annotations

import inspect
import re

import pytest
from google.protobuf import message_factory
from mnbara.mlserving.catalog import BY_NAME

import ml_serving
from ml_serving._methods import _Declared, unary

CLIENTS = [
    (ml_serving.BanditClient, BY_NAME["bandit"]),
    (ml_serving.RegistryClient, BY_NAME["registry"]),
    (ml_serving.InferenceClient, BY_NAME["inference"]),
    (ml_serving.RouterClient, BY_NAME["router"]),
    (ml_serving.PipelineClient, BY_NAME["pipeline"]),
]
IDS = [entry.name for _, entry in CLIENTS]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def service_descriptor(entry):
    return entry.messages.DESCRIPTOR.services_by_name[entry.full_name.rsplit(".", 1)[1]]


def list_rpcs(entry):
    """The RPCs that page: their request has a page_token."""
    return [rpc for rpc in service_descriptor(entry).methods if "page_token" in rpc.input_type.fields_by_name]


class EmptyStream:
    """A server stream that ends at once."""

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration

    def cancel(self):
        return False


class RecordingChannel:
    """Stands in for a grpc.aio channel: records each call's (path, request) and answers with the
    queued responses, then with empty responses of the RPC's type."""

    def __init__(self, *responses):
        self.calls, self.responses = [], list(responses)

    def unary_unary(self, path, request_serializer=None, response_deserializer=None, **kwargs):
        async def call(request, timeout=None, metadata=None):
            self.calls.append((path, request))
            return self.responses.pop(0) if self.responses else response_deserializer(b"")
        return call

    def stream_unary(self, path, request_serializer=None, response_deserializer=None, **kwargs):
        async def call(requests, timeout=None, metadata=None):
            first = [request async for request in requests][0]  # the header
            self.calls.append((path, first))
            return self.responses.pop(0) if self.responses else response_deserializer(b"")
        return call

    def unary_stream(self, path, request_serializer=None, response_deserializer=None, **kwargs):
        def call(request, timeout=None, metadata=None):
            self.calls.append((path, request))
            return EmptyStream()
        return call


def sample(annotation: str):
    """A value for a required parameter, by its annotation (a string: the modules use postponed annotations)."""
    if annotation.startswith("Sequence"):
        return []
    if "Mapping" in annotation or annotation.startswith("Inputs"):
        return {}
    return {"str": "x", "float": 0.5, "StageLike": 0, "ArtifactSource": b"artifact"}[annotation]


def required_arguments(method) -> tuple[list, dict]:
    args, kwargs = [], {}
    for param in inspect.signature(method).parameters.values():
        if param.default is not param.empty or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.KEYWORD_ONLY:
            kwargs[param.name] = sample(param.annotation)
        else:
            args.append(sample(param.annotation))
    return args, kwargs


async def call_with_required_arguments(method):
    args, kwargs = required_arguments(method)
    result = method(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return [response async for response in result]


def declared_methods(client_type):
    for klass in client_type.__mro__:
        for name, attribute in vars(klass).items():
            if isinstance(attribute, _Declared):
                yield name, attribute


@pytest.mark.parametrize("client_type, entry", CLIENTS, ids=IDS)
def test_declared_methods_name_rpcs_of_their_service(client_type, entry):
    service = service_descriptor(entry)
    declared = dict(declared_methods(client_type))
    assert declared, client_type
    for name, method in declared.items():
        assert service.methods_by_name[method.method.name] is method.method, name
        assert method.request_type.DESCRIPTOR is method.method.input_type, name
        assert method.response_type.DESCRIPTOR is method.method.output_type, name


@pytest.mark.parametrize("client_type, entry", CLIENTS, ids=IDS)
async def test_every_rpc_is_reachable_from_its_client(client_type, entry):
    for rpc in service_descriptor(entry).methods:
        channel = RecordingChannel()
        await call_with_required_arguments(getattr(client_type(channel=channel), snake(rpc.name)))
        [(path, request)] = channel.calls
        assert path == f"/{entry.full_name}/{rpc.name}"
        assert request.DESCRIPTOR is rpc.input_type


def definition_error(caught: pytest.ExceptionInfo) -> BaseException:
    """Python 3.11 wraps an error raised by __set_name__ in a RuntimeError; 3.12 raises it as is."""
    return caught.value.__cause__ if type(caught.value) is RuntimeError else caught.value


def test_declaring_an_rpc_the_stub_lacks_fails_at_class_creation():
    pb = ml_serving.bandit.pb
    with pytest.raises(Exception) as caught:
        class Misspelt(ml_serving.BanditClient):
            list_decision = unary(lambda stub: stub.ListDecision, pb.ListDecisionsRequest, pb.ListDecisionsResponse)
    assert isinstance(definition_error(caught), AttributeError)


def test_declaring_the_wrong_types_fails_at_class_creation():
    pb = ml_serving.bandit.pb
    with pytest.raises(Exception) as caught:
        class Mistyped(ml_serving.BanditClient):
            list_decisions = unary(lambda stub: stub.ListDecisions, pb.ListBanditsRequest, pb.ListDecisionsResponse)
    error = definition_error(caught)
    assert isinstance(error, TypeError) and "ListDecisionsRequest" in str(error)


def two_pages(rpc):
    """A first page of one item that points to a second page of one item."""
    page_type = message_factory.GetMessageClass(rpc.output_type)
    [items] = [field.name for field in rpc.output_type.fields if field.is_repeated]
    first, last = page_type(next_page_token="page-2"), page_type()
    getattr(first, items).add()
    getattr(last, items).add()
    return first, last


@pytest.mark.parametrize("client_type, entry", CLIENTS, ids=IDS)
async def test_every_list_rpc_has_an_iterator_over_all_pages(client_type, entry):
    assert list_rpcs(entry), entry.name
    for rpc in list_rpcs(entry):
        channel = RecordingChannel(*two_pages(rpc))
        client = client_type(channel=channel)
        args, kwargs = required_arguments(getattr(client, snake(rpc.name)))
        iterate = getattr(client, "iter_" + snake(rpc.name.removeprefix("List")))
        items = [item async for item in iterate(*args, **kwargs)]
        assert len(items) == 2, rpc.name
        assert [request.page_token for _, request in channel.calls] == ["", "page-2"], rpc.name


async def test_pages_follows_tokens_from_the_given_one_and_passes_other_arguments():
    pb = ml_serving.bandit.pb
    channel = RecordingChannel(pb.ListBanditsResponse(next_page_token="b"), pb.ListBanditsResponse())
    client = ml_serving.BanditClient(channel=channel)
    pages = [page async for page in ml_serving.pages(client.list_bandits, page_size=2, page_token="a")]
    assert [page.next_page_token for page in pages] == ["b", ""]
    assert [(request.page_token, request.page_size) for _, request in channel.calls] == [("a", 2), ("b", 2)]


def test_declared_and_iterator_methods_are_named_and_documented():
    client = ml_serving.BanditClient(channel=RecordingChannel())
    assert client.list_decisions.__name__ == "list_decisions"
    assert "mnbara.mlserving.bandit.v1.BanditService.ListDecisions" in client.list_decisions.__doc__
    assert client.iter_bandits.__qualname__ == "BanditClient.iter_bandits"
    assert "list_bandits" in client.iter_bandits.__doc__
