"""`GET /_emulator/stats`: accepted and 429 sends per app and project, checked against the
limit in sliding and in wall-clock one-second windows."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from convodesk.emulator.stats import Counter, SendStats
from tests.emulator.conftest import APP, CONV_APP, PROJECT, US_APP, US_PROJECT, Harness, config_dict


def test_counter_sliding_window_is_half_open() -> None:
    counter = Counter(limit=2)
    for t in (10.0, 10.5, 11.0):  # 10.0 and 11.0 are a whole second apart: not one window
        counter.accept(t)
    assert counter.max_in_any_second == 2
    counter.accept(11.2)  # 10.5, 11.0, 11.2 within 0.7 s
    assert counter.max_in_any_second == 3
    assert counter.accepted == 4


def test_counter_counts_each_wall_clock_second_over_the_limit_once() -> None:
    counter = Counter(limit=2)
    for t in (20.1, 20.2, 20.3, 20.4, 21.0, 21.5, 22.0, 22.1, 22.9):
        counter.accept(t)
    # second 20: 4 sends (over), second 21: 2 (not over), second 22: 3 (over)
    assert counter.intervals_over_limit == 2
    # The sliding window sees more than any whole second: 20.1 to 21.0 hold 5.
    assert counter.max_in_any_second == 5
    evenly = Counter(limit=20)
    for i in range(200):  # 20/s, evenly spaced: never over
        evenly.accept(100.0 + i * 0.05)
    assert (evenly.max_in_any_second, evenly.intervals_over_limit) == (20, 0)


def test_counter_with_a_fractional_limit() -> None:
    counter = Counter(limit=2.5)
    for t in (5.0, 5.1, 5.2, 5.3):
        counter.accept(t)
    assert counter.intervals_over_limit == 1
    assert counter.to_json()["limit"] == 2.5
    assert Counter(limit=20.0).to_json()["limit"] == 20


def test_send_stats_ignore_unknown_apps_and_projects_for_rejections() -> None:
    stats = SendStats([("A", "P", 20.0)], [("P", 800.0)])
    stats.rejected(None, "P")
    stats.rejected("A", "P")
    stats.rejected("B", "P")  # an app we do not know: counted for the project only
    stats.rejected("A", "Q")  # a project we do not know: nothing
    stats.accepted("A", "P", 1.0)
    data = stats.to_json()
    assert data["projects"]["P"]["rejected_429"] == 3
    assert data["apps"]["A"]["rejected_429"] == 1
    assert data["apps"]["A"]["project_id"] == "P"
    assert data["apps"]["A"]["accepted"] == data["projects"]["P"]["accepted"] == 1
    stats.reset()
    assert stats.to_json()["apps"]["A"]["accepted"] == 0


def _stats(emu: Harness) -> dict[str, Any]:
    answer = emu.http.get("/_emulator/stats")
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def _limited(
    make_emulator: Callable[..., Harness], receiver_url: str, *, app: float, project: float
) -> Harness:
    config = copy.deepcopy(config_dict(receiver_url))
    config["projects"][0]["rate_limit"] = project
    for entry in config["projects"][0]["apps"]:
        entry["rate_limit"] = app
    return make_emulator(config)


def test_stats_start_at_zero_for_every_configured_app_and_project(emu: Harness) -> None:
    data = _stats(emu)
    assert set(data["apps"]) == {APP, CONV_APP, US_APP}
    assert set(data["projects"]) == {PROJECT, US_PROJECT}
    assert data["apps"][APP] == {
        "project_id": PROJECT,
        "limit": 200,
        "accepted": 0,
        "rejected_429": 0,
        "max_in_any_second": 0,
        "intervals_over_limit": 0,
    }
    assert data["projects"][PROJECT]["limit"] == 800


def test_stats_count_accepted_and_app_rate_429s_and_reset_clears_them(
    make_emulator: Callable[..., Harness], receiver: Any
) -> None:
    emu = _limited(make_emulator, receiver.url, app=3, project=800)
    statuses = [emu.send_raw(_body(APP, n)).status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    data = _stats(emu)
    app, project = data["apps"][APP], data["projects"][PROJECT]
    assert (app["accepted"], app["rejected_429"], app["max_in_any_second"]) == (3, 2, 3)
    assert (project["accepted"], project["rejected_429"]) == (3, 2)
    assert data["apps"][CONV_APP]["accepted"] == 0
    assert emu.http.post("/_emulator/reset").status_code == 200
    after = _stats(emu)
    assert after["apps"][APP]["accepted"] == after["projects"][PROJECT]["rejected_429"] == 0


def test_a_project_rate_429_is_counted_for_the_app_the_send_named(
    make_emulator: Callable[..., Harness], receiver: Any
) -> None:
    emu = _limited(make_emulator, receiver.url, app=200, project=2)
    statuses = [emu.send_raw(_body(CONV_APP if n else APP, n)).status_code for n in range(4)]
    assert statuses == [200, 200, 429, 429]
    data = _stats(emu)
    assert data["projects"][PROJECT]["rejected_429"] == 2
    assert data["apps"][CONV_APP]["rejected_429"] == 2
    assert data["apps"][APP]["rejected_429"] == 0
    assert data["apps"][APP]["accepted"] == data["apps"][CONV_APP]["accepted"] == 1


def test_injected_429s_are_counted(emu: Harness) -> None:
    emu.http.post("/_emulator/faults", json={"error_rate": 1.0, "error_statuses": [429]})
    assert emu.send_raw(_body(APP, 0)).status_code == 429
    assert _stats(emu)["apps"][APP]["rejected_429"] == 1


def test_sends_over_the_limit_in_one_wall_clock_second_are_seen(
    make_emulator: Callable[..., Harness], receiver: Any, clock: Any
) -> None:
    # The emulator's own bucket (capacity = rate, like Sinch's) lets 2 through at once and a
    # third 0.5 s later: 3 accepted within one second against a limit of 2.
    emu = _limited(make_emulator, receiver.url, app=2, project=800)
    now = time.time()
    clock.offset = math.ceil(now) - now + 0.001  # the emulator's clock at the start of a second
    accepted = 0
    deadline = time.monotonic() + 0.9
    while accepted < 3:
        assert time.monotonic() < deadline, "the third send was not accepted in time"
        if emu.send_raw(_body(APP, accepted)).status_code == 200:
            accepted += 1
        else:
            time.sleep(0.02)
    app = _stats(emu)["apps"][APP]
    assert (app["accepted"], app["max_in_any_second"], app["intervals_over_limit"]) == (3, 3, 1)
    assert app["rejected_429"] >= 1


def _body(app_id: str, n: int) -> dict[str, Any]:
    identity = {"channel": "SMS", "identity": f"4670{n:07d}"}
    return {
        "app_id": app_id,
        "recipient": {"identified_by": {"channel_identities": [identity]}},
        "message": {"text_message": {"text": "Hi"}},
    }


@pytest.mark.parametrize("path", ["/_emulator/stats"])
def test_stats_is_get_only(emu: Harness, path: str) -> None:
    assert emu.http.post(path).status_code == 405
