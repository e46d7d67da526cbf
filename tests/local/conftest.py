"""Fixtures for the local endpoint tests: a running server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from rxrunpod.local import LocalEndpoint
from tests.local.handlers import basic


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def echo_endpoint() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(basic.echo, workers=2) as endpoint:
        yield endpoint
