"""No body, signed or not, makes the intake answer 500."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from convodesk.storage.db import transaction
from convodesk.storage.tables import EventRow
from tests.support.intake import configured_runtime, intake_client, signed_post
from tests.support.sinch_fixtures import all_fixture_names, load_fixture

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def mutated_fixture() -> st.SearchStrategy[bytes]:
    """A real callback with one top-level or nested value replaced by anything."""

    def mutate(name: str, path_pick: int, value: object) -> bytes:
        data = json.loads(load_fixture(name))
        target = data
        keys = list(target)
        key = keys[path_pick % len(keys)]
        if isinstance(target[key], dict) and target[key]:
            inner = list(target[key])
            target = target[key]
            key = inner[path_pick % len(inner)]
        target[key] = value
        return json.dumps(data).encode()

    return st.builds(mutate, st.sampled_from(all_fixture_names()), st.integers(0, 50), json_values)


def test_no_body_makes_the_intake_fail(tmp_path: Path) -> None:
    runtime = configured_runtime(f"sqlite:///{tmp_path / 'p.db'}", tmp_path)
    try:
        with intake_client(runtime) as (client, app):

            @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(
                body=st.binary(max_size=300)
                | json_values.map(lambda v: json.dumps(v).encode())
                | mutated_fixture(),
                signed=st.booleans(),
            )
            def check(body: bytes, signed: bool) -> None:
                if signed:
                    answer = signed_post(client, body)
                else:
                    answer = client.post("/sms/sinchconversation/sinch-eu", content=body)
                assert answer.status_code in (200, 400, 401, 403, 413), answer.text
                assert answer.headers["content-type"].startswith("application/json")

            check()
            while app.state.processor.process_batch():
                pass
        # Every stored body was processed without an internal error.
        with transaction(runtime.sessions) as session:
            failed = list(session.scalars(select(EventRow).where(EventRow.state == "failed")))
        assert [e.state_reason for e in failed] == []
    finally:
        runtime.close()
