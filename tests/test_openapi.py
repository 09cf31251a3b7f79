"""The OpenAPI 3.1 description at ``GET /openapi.json`` (issue 2/8, "make it stay fixed").

It is valid OpenAPI, it covers every route the app registers and nothing else, it needs
no key and holds none; and Schemathesis, generating requests from it against a relay on
127.0.0.1, finds no 5xx and no answer that the document does not describe (status,
content type, headers, body schema)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
import schemathesis
from fuzzing import Route, fuzz_settings, part_header_ok, routes_of
from hypothesis import given
from relay_fixtures import RelayFactory
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_fuzz_http import METRICS_TOKEN, SECURED
from test_hostile_security import ADMIN, RELAY_KEY

from relay.http.openapi import OPENAPI_PATH, build_document

# An SDP offer is text: sent as Schemathesis sends text/plain.
schemathesis.serializer.alias("application/sdp", "text/plain")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Generated requests per operation (about 30 operations).
EXAMPLES = 20
TOKENS = {"relayKey": RELAY_KEY, "adminToken": ADMIN, "metricsToken": METRICS_TOKEN}


def documented_routes(document: dict[str, Any]) -> set[Route]:
    return {
        Route(method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


async def test_every_route_is_documented_and_nothing_else(start_relay: RelayFactory) -> None:
    relay = await start_relay(**SECURED)
    document = build_document()
    served = await relay.http.get(relay.url(OPENAPI_PATH))  # no key needed
    assert served.status == 200 and served.content_type == "application/json"
    body = await served.read()
    assert await served.json() == document
    for secret in (RELAY_KEY, ADMIN, METRICS_TOKEN, "sk-"):
        assert secret.encode() not in body
    schemathesis.openapi.from_dict(build_document()).validate()  # OpenAPI 3.1 itself

    routes = {r for r in routes_of(relay.app) if not r.template.endswith("{filename}")}
    documented = documented_routes(document)
    assert routes - documented == set(), "routes without an OpenAPI entry"
    assert documented - routes == set(), "OpenAPI entries without a route"
    for path in ("/api/calls/{call_id}/events", "/api/calls/{call_id}/listen"):
        operation = document["paths"][path]["get"]
        assert "101" in operation["responses"] and "WebSocket" in operation["summary"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method)


def _auth_for(operation: Any) -> dict[str, str]:
    """The header of the first key the operation's ``security`` names."""
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            return {"Authorization": f"Bearer {TOKENS[scheme]}"}
    return {}


def _known_defect(case: Any) -> bool:
    """A multipart part name with a control byte: see ``MULTIPART_HEADER_ERRORS_FIXED``."""
    if not str(case.media_type or "").startswith("multipart/") or not isinstance(case.body, dict):
        return False
    return not all(part_header_ok(str(name).encode("utf-8", "replace")) for name in case.body)


def check_operation(base_url: str, label: str) -> int:
    """``EXAMPLES`` generated requests to one operation, each answer validated against
    the document (blocking: run it in a thread). Returns how many were sent."""
    schema = schemathesis.openapi.from_url(f"{base_url}{OPENAPI_PATH}", timeout=10)
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    headers = _auth_for(operation)
    calls = 0

    with requests.Session() as session:

        @fuzz_settings(EXAMPLES)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal calls
            if _known_defect(case):
                return
            calls += 1
            response = case.call(
                base_url=base_url,
                session=session,
                headers=headers,
                allow_redirects=False,
                timeout=20,
            )
            case.validate_response(response, checks=CHECKS, headers=headers)

        check()
    return calls


OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, operations in build_document()["paths"].items()
    for method in operations
)


@pytest.mark.parametrize("label", OPERATIONS)
async def test_schemathesis_finds_nothing_undocumented(
    start_relay: RelayFactory, caplog: pytest.LogCaptureFixture, label: str
) -> None:
    relay = await start_relay(**SECURED, enable_direct_session=True)
    calls = await asyncio.to_thread(check_operation, relay.url("").rstrip("/"), label)
    assert calls >= 1
    assert not [r for r in caplog.records if r.exc_info]
