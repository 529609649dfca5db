"""Fixtures shared by the tests: a real Dask cluster and a real S3-compatible server on
loopback. Helpers the tests import live in ``tests/helpers.py``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """A real LocalCluster of 2 worker processes, shared by the tests that need one."""
    from featurestore.cluster import connect

    with connect(n_workers=2) as client:
        yield client


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory):
    """The demo library's 48 cues, synthesized once for the session (the slowest part of a
    demo build): the catalog's path. Tests that need a library of their own, or fewer cues,
    take a copy with :func:`tests.helpers.copy_demo_library`; none writes into this one."""
    from catalogs.demo import generate_demo_library

    return generate_demo_library(str(tmp_path_factory.mktemp("demo-library")))


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, demo_library, dask_client):
    """The demo library (48 cues, 16 films) built with chunks of 8 tiles, shared by the
    training and model tests (which only add models to it; the scoring tests copy it)."""
    import featurestore

    url = str(tmp_path_factory.mktemp("demo") / "store")
    featurestore.build(demo_library, url, name="demo", client=dask_client, progress=False,
                       encoding=featurestore.TileEncoding(chunk_tiles=8))
    return url


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on loopback; yields ``(endpoint, storage_options)``
    with a fresh bucket per test through :func:`s3_bucket`."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"key": "test", "secret": "test",
               "client_kwargs": {"endpoint_url": endpoint}}
    yield endpoint, options
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A new bucket on the loopback S3 server: ``(s3://bucket, storage_options)``."""
    import s3fs

    _, options = s3_endpoint
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}", options
