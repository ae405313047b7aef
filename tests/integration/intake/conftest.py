"""Fixtures shared by the intake tests: a runtime configured by `intake_config()`, and an
app on it whose workers the tests drive themselves (`process`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from convodesk.runtime import Runtime
from tests.support.intake import configured_runtime, intake_client


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = configured_runtime(database_url, tmp_path)
    yield rt
    rt.close()


@pytest.fixture
def served(runtime: Runtime) -> Iterator[tuple[TestClient, FastAPI]]:
    with intake_client(runtime) as pair:
        yield pair
