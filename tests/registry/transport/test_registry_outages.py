"""PostgreSQL or S3 out of reach under the registry: a cuttable proxy in front of the real
server. Calls that need it answer UNAVAILABLE with a reason naming what is down, change
nothing, and the registry serves again once it is back."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit, urlunsplit

import pytest
from ml_serving import RegistryClient, UnavailableError

from ..conftest import mar_bytes, registry_settings_for, start_registry, unique_name
from ..faults import CuttableProxy


def via(url: str, proxy: CuttableProxy) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")
    userinfo = host[0] + "@" if host[1] else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}"))


async def proxied(url: str) -> CuttableProxy:
    parts = urlsplit(url)
    return await CuttableProxy(parts.hostname, parts.port or 5432).start()


@contextlib.asynccontextmanager
async def replica(database_url: str, settings, dev_keys, token, proxy: CuttableProxy):
    """A registry replica and its client; afterwards the proxy is revived and everything stopped."""
    server = await start_registry(database_url, settings, dev_keys)
    client = RegistryClient(f"127.0.0.1:{server.port}", token=token, timeout=20)
    try:
        yield client
    finally:
        proxy.revive()
        await client.close()
        await server.stop(1.0)
        await proxy.stop()


async def test_postgresql_out_of_reach_is_unavailable_and_changes_nothing(database_url, mlflow_uri, s3_endpoint,
                                                                          dev_keys, token):
    proxy = await proxied(database_url)
    settings = registry_settings_for(mlflow_uri, s3_endpoint, database_timeout_seconds=1.0)
    async with replica(via(database_url, proxy), settings, dev_keys, token, proxy) as client:
        name = unique_name("pgdown")
        await client.create_registered_model(name)
        proxy.cut_after(0)
        with pytest.raises(UnavailableError) as raised:
            await client.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar")
        assert raised.value.reason == "BACKEND_UNAVAILABLE" and raised.value.metadata["backend"] == "database"
        with pytest.raises(UnavailableError):
            await client.create_registered_model(unique_name())
        proxy.revive()
        # nothing half-made: no version in MLflow without its stage and event
        assert not (await client.list_model_versions(name)).model_versions
        assert (await client.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar")
                ).model_version.version == "1"


async def test_s3_out_of_reach_is_unavailable_naming_the_artifact_store(database_url, mlflow_uri, s3_endpoint,
                                                                        dev_keys, token):
    proxy = await proxied(s3_endpoint.url)
    settings = registry_settings_for(mlflow_uri, s3_endpoint, s3_endpoint_url=proxy.uri, s3_timeout_seconds=1.0)
    async with replica(database_url, settings, dev_keys, token, proxy) as client:
        name = unique_name("s3down")
        await client.create_registered_model(name)
        proxy.cut_after(0)
        with pytest.raises(UnavailableError) as raised:
            await client.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar")
        assert raised.value.reason == "ARTIFACT_STORE_UNAVAILABLE"
        assert not (await client.list_model_versions(name)).model_versions
        proxy.revive()
        await client.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar")
