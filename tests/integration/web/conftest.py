"""Fixtures shared by the web API tests: a migrated runtime and an admin client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from convodesk.runtime import Runtime
from tests.support.apps import client_for, make_runtime, make_token


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(database_url, tmp_path)
    yield rt
    rt.close()


@pytest.fixture
def admin(runtime: Runtime) -> Iterator[TestClient]:
    with client_for(runtime, make_token(runtime)) as client:
        yield client
