"""schemathesis against the gateway's OpenAPI description of the HTTP bridge, sent over real HTTP to the running
gateway: no 5xx, answers conform to the documented status codes, content types and schemas (positive and
negative examples per operation); the gateway stays healthy.

The operations are read from the application's description at collection time (one test per operation and
mode); a test checks that the running gateway serves that very description.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.deps import Dependencies
from gateway.http_app import create_app
from tests.fuzz import counts
from tests.fuzz.conftest import FUZZ_EXAMPLES, PROFILE
from tests.fuzz.stack import FuzzStack
from upscaling.config import Settings

# Examples per operation and mode: few and derandomized for CI, FUZZ_EXAMPLES with `make fuzz`.
EXAMPLES = FUZZ_EXAMPLES if PROFILE == "fuzz" else 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
DESCRIPTION = create_app(Dependencies(Settings())).openapi()
SCHEMA = schemathesis.openapi.from_dict(DESCRIPTION)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
MODES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.body or op.path_parameters or op.query]


def test_running_gateway_serves_the_description(fuzz_stack: FuzzStack) -> None:
    served = requests.get(f"{fuzz_stack.http}/openapi.json", timeout=10).json()
    assert served == DESCRIPTION
    assert len(OPERATIONS) >= 14


@pytest.mark.parametrize(("operation", "mode"), MODES, ids=[f"{op.label} {mode}" for op, mode in MODES])
def test_openapi_operation(fuzz_stack: FuzzStack, operation: Any, mode: GenerationMode) -> None:
    checks = [*CHECKS, negative_data_rejection] if mode == GenerationMode.NEGATIVE else CHECKS
    session = requests.Session()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, derandomize=PROFILE != "fuzz", deadline=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        counts.record(f"HTTP schemathesis {operation.label}")
        response = case.call(base_url=fuzz_stack.http, session=session, timeout=60)
        case.validate_response(response, checks=checks)

    run()
