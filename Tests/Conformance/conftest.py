"""Shared fixtures of the conformance tier: the server under test (started by
scripts/conformance.sh, its address in TASKM_BASE_URL) and where artifacts go."""
import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("TASKM_BASE_URL")
    if not url:
        pytest.fail("TASKM_BASE_URL is not set: run this tier with `make conformance`")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def artifacts() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TASKM_ARTIFACTS", "artifacts/conformance"))
    path.mkdir(parents=True, exist_ok=True)
    return path
