"""Schemathesis fuzzing of every operation in /api/schema/ against a live server: no
input, however odd, may produce a 5xx. Bodies from the schema, then path and query
parameters with values PostgreSQL refuses (NUL, integers beyond bigint). Bounded:
MAX_EXAMPLES per operation."""
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


# Values PostgreSQL refuses or that overflow its types, mixed with ordinary ones.
FIXED_HOSTILE = ["\x00", "a\x00b", str(2**63), str(-(2**63) - 1), "1e400", "NaN", "-1", "%", "x" * 300]
HOSTILE_VALUES = st.one_of(
    st.text(alphabet=st.sampled_from("\x00ab9-%/\\'\" \ufffd"), min_size=1, max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["\x00", "a\x00b", str(2**63), str(-(2**63) - 1), "1e400", "NaN", "", "bob"]),
)


@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_api_fuzz_path_and_query_parameters(live_server, alice, bob, checklist, token_for):
    """The same operations with their path and query parameters drawn from hostile values
    (the generated body is kept, so each request is otherwise well-formed)."""
    schema = schemathesis.from_uri(f"{live_server.url}/api/schema/")
    headers = {"Authorization": f"Token {token_for(alice)}"}
    item_id = checklist.items.first().pk
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    with_parameters = [op for op in operations if op.path_parameters or op.query]
    assert len(with_parameters) >= 10

    def real_value(path: str, name: str):
        return item_id if path.startswith("/api/items/") else {"id": checklist.pk, "username": "bob"}[name]

    def call(case) -> None:
        case.headers = {**(case.headers or {}), **headers}  # alice, whatever the generator chose
        response = case.call(base_url=live_server.url, timeout=10)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.query!r} -> {response.status_code}")

    for operation in with_parameters:
        query_names = [p.name for p in operation.query]
        # First every fixed hostile value in each parameter, the others real (deterministic),
        # then hypothesis' exploration below.
        path_names = [p.name for p in operation.path_parameters]
        for target in path_names + query_names:
            for bad in FIXED_HOSTILE:
                path = {n: bad if n == target else real_value(operation.path, n) for n in path_names}
                if operation.method.upper() == "DELETE" and "id" in path and target != "id" \
                        and not operation.path.endswith("{username}/"):
                    continue  # would delete the real checklist or item
                query = {target: bad} if target in query_names else {}
                call(operation.make_case(path_parameters=path or None, query=query or None))

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), data=st.data())
        def run(case, data):
            # One path parameter is hostile and the others name real objects, so a hostile
            # value in one segment is reached with the others resolving (a NUL username
            # needs a real checklist id to get past the 404). Never the real checklist or
            # item for a DELETE: every later example would be a 404.
            names = list(case.path_parameters or {})
            target = data.draw(st.sampled_from(names), label="hostile") if names else None
            for name in names:
                real = real_value(case.path, name)
                spares_real = case.method == "DELETE" and name == "id" and not case.path.endswith("{username}/")
                if name == target or spares_real:
                    case.path_parameters[name] = data.draw(HOSTILE_VALUES, label=name)
                else:
                    case.path_parameters[name] = real
            query = dict(case.query or {})
            for name in query_names + ["page", "page_size"]:
                if data.draw(st.booleans()):
                    query[name] = data.draw(HOSTILE_VALUES, label=name)
            case.query = query
            call(case)

        try:
            run()
        except Exception as exc:  # noqa: BLE001  (collect every operation's failure, report together)
            failures.append(f"{operation.verbose_name}: {exc}")
    assert not failures, "\n".join(failures[:20])
