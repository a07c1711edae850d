"""The OpenAPI document is the contract: a property-based run of every operation (schemathesis,
against the app on the tiny model) finds no server error and no status the document does not
declare, and every error body has OpenAI's shape."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

ADMIN = {"Authorization": "Bearer adm"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, model_cache):
    """A real server on loopback serving the tiny model (schemathesis' in-process ASGI client
    would run the app's start-up again for every request)."""
    from tests.fixtures.server import LiveServer

    env = {"REFINERY_ADMIN_KEY": "adm", "REFINERY_RUN_JOBS": "false", "REFINERY_BACKGROUND_ANALYSIS": "false",
           "REFINERY_MAX_TOKENS_LIMIT": "16", "REFINERY_DEFAULT_MAX_TOKENS": "4"}
    live = LiveServer(tmp_path_factory.mktemp("contract"), model_cache, model=str(tiny_model_dir), env=env).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_the_document_declares_openai_errors_and_never_422(server):
    import httpx

    doc = httpx.get(server.url + "/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], f"{method} {path} declares FastAPI's 422"
            if op.get("requestBody") or op.get("parameters"):
                assert "400" in op["responses"], f"{method} {path} takes input but declares no 400"
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in resp:
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), f"{method} {path} {status}: {ref}"


@pytest.mark.parametrize("mode, headers, examples", [
    ("positive", ADMIN, 25),   # requests the document allows
    ("negative", ADMIN, 25),   # requests it does not: wrong types, missing fields, out-of-range values
    ("positive", {}, 5),       # no key at all
])
def test_no_server_error_and_no_undocumented_status(api_schema, mode, headers, examples):
    # Each operation's strategy is run here rather than through schemathesis' pytest plugin,
    # whose lazy fixtures do not work with pytest 9.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    ran = 0
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @hypothesis_settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                             database=None)
        def check(case):
            response = case.call(base_url=api_schema.config.base_url, headers=headers)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
            if response.status_code >= 400 and "application/json" in str(response.headers.get("content-type")):
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]

        try:
            check()
            ran += 1
        except Unsatisfiable:  # nothing about this operation can be made invalid (no parameters)
            assert mode == "negative"
    assert ran >= 12
