"""Schemathesis fuzzing of every operation in /api/schema/ against a live server: no
input, however odd, may produce a 5xx. Bounded: MAX_EXAMPLES per operation."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 20


@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_api_fuzz_no_server_errors(live_server, alice, bob, checklist, token_for):
    schema = schemathesis.from_uri(f"{live_server.url}/api/schema/")
    headers = {"Authorization": f"Token {token_for(alice)}"}
    real = {"id": checklist.pk, "username": "bob"}
    item_id = checklist.items.first().pk
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), use_real=st.booleans())
        def run(case, use_real):
            if use_real and case.path_parameters:
                # Half the examples address objects that exist, so writes get past 404.
                for name in case.path_parameters:
                    case.path_parameters[name] = item_id if case.path.startswith("/api/items/") else real.get(name)
            response = case.call(base_url=live_server.url, headers=headers, timeout=10)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code}")
            case.validate_response(response, checks=(not_a_server_error,))

        try:
            run()
        except Exception as exc:  # noqa: BLE001  (collect every operation's failure, report together)
            failures.append(f"{operation.verbose_name}: {exc}")
    assert not failures, "\n".join(failures[:20])
