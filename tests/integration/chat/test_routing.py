"""Routing: who gets an offer, in what order, within what limits; offer timeouts, missed
offers, rejects, picks, and the race between agents for one conversation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from convodesk.services import chat_server
from convodesk.services.directory import DirectoryCache
from convodesk.services.errors import ConflictError
from convodesk.storage.api_tokens import Principal
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentRow, ApiTokenRow, ConversationRow, OfferRow
from convodesk.workers.router import Router
from tests.integration.chat.conftest import Chat
from tests.support.apps import make_runtime


def offered(chat: Chat, login: str) -> list[int]:
    """The conversation ids of the agent's outstanding offers, oldest first."""
    return [o["conversation_id"] for o in chat.desk(login).offers()]


def test_the_agent_idle_longest_gets_the_offer_and_load_spreads(chat: Chat) -> None:
    chat.desk("bob").ready()
    chat.desk("anna").ready()  # ready after bob: bob has been idle longer
    first, second, third, fourth, fifth = (chat.conversation() for _ in range(5))
    assert chat.route().offers == 4
    # bob (idle longest), then anna (least loaded), then bob again (equal load, idle
    # longer), then anna; both are full at two chats, so the fifth waits.
    assert offered(chat, "bob") == [first, third]
    assert offered(chat, "anna") == [second, fourth]
    assert chat.offers_of(fifth) == []


def test_an_accepted_chat_makes_the_other_agent_the_idle_one(chat: Chat) -> None:
    anna, bob = chat.desk("anna"), chat.desk("bob")
    anna.ready()
    bob.ready()
    first = chat.conversation()
    chat.route()
    [offer] = anna.offers()
    assert anna.accept(offer["id"]).status_code == 200
    assert anna.post(f"/api/v1/conversations/{first}/end", json={}).status_code == 200
    # anna's chat just ended: she is idle since now, bob since he became ready.
    second = chat.conversation()
    chat.route()
    assert offered(chat, "bob") == [second]


def test_higher_priority_first_then_the_oldest(chat: Chat) -> None:
    young_support = chat.conversation("support", waited_seconds=100)
    old_support = chat.conversation("support", waited_seconds=200)
    vip = chat.conversation("vip", channel="MESSENGER", waited_seconds=10)
    chat.desk("dana").ready()  # vip and support, one chat at a time
    chat.route()
    assert offered(chat, "dana") == [vip]
    chat.desk("anna").ready()
    chat.route()
    assert offered(chat, "anna") == [old_support, young_support]


def test_an_agent_gets_only_its_queues(chat: Chat) -> None:
    sales = chat.conversation("sales", channel="SMS")
    chat.desk("anna").ready()
    chat.route()
    assert offered(chat, "anna") == []
    chat.desk("carl").ready()
    chat.route()
    assert offered(chat, "carl") == [sales]


def test_not_ready_agents_get_no_offers_and_lose_theirs(chat: Chat) -> None:
    conversation = chat.conversation()
    anna, bob = chat.desk("anna"), chat.desk("bob")
    chat.route()
    assert chat.offers_of(conversation) == []
    anna.ready()
    chat.route()
    assert chat.offers_of(conversation) == [("anna", "offered")]
    bob.ready()
    anna.ready("not_ready")  # her offer is withdrawn: it goes to bob
    chat.route()
    assert chat.offers_of(conversation) == [("anna", "withdrawn"), ("bob", "offered")]


def test_capacity_counts_active_chats_and_outstanding_offers(chat: Chat) -> None:
    anna = chat.desk("anna")
    anna.ready()
    first, second, third = (chat.conversation() for _ in range(3))
    chat.route()
    assert offered(chat, "anna") == [first, second]
    assert anna.accept(anna.offers()[0]["id"]).status_code == 200
    chat.route()
    assert offered(chat, "anna") == [second]  # one active, one offered: full
    assert chat.offers_of(third) == []
    answer = anna.post(f"/api/v1/conversations/{third}/pick")
    assert answer.status_code == 409
    assert "no room" in answer.json()["error"]["message"]


def test_an_expired_offer_goes_to_the_next_agent_not_back_at_once(chat: Chat) -> None:
    chat.desk("anna").ready()
    chat.desk("bob").ready()
    conversation = chat.conversation()
    chat.route()
    assert chat.offers_of(conversation) == [("anna", "offered")]
    report = chat.route(after_seconds=31)
    assert report.expired == 1
    assert chat.offers_of(conversation) == [("anna", "expired"), ("bob", "offered")]
    [offer] = chat.desk("bob").offers()
    assert offer["conversation_id"] == conversation
    answer = chat.desk("anna").accept(chat_offer_id(chat, conversation, 0))
    assert answer.status_code == 409
    assert answer.json()["error"]["message"].endswith("was expired")


def chat_offer_id(chat: Chat, conversation_id: int, index: int) -> int:
    with transaction(chat.runtime.sessions) as session:
        ids = session.scalars(
            select(OfferRow.id)
            .where(OfferRow.conversation_id == conversation_id)
            .order_by(OfferRow.id)
        ).all()
    return ids[index]


def test_missing_offers_in_a_row_sets_the_agent_not_ready(chat: Chat) -> None:
    anna = chat.desk("anna")
    anna.ready()
    conversation = chat.conversation()
    chat.route()
    chat.route(after_seconds=31)  # missed once; not offered to her again right away
    assert chat.offers_of(conversation) == [("anna", "expired")]
    chat.route(after_seconds=62)  # the skip has run out: offered again
    assert chat.offers_of(conversation)[-1] == ("anna", "offered")
    assert anna.get("/api/v1/me").json()["presence"] == "ready"
    chat.route(after_seconds=93)  # missed twice in a row: not ready
    assert anna.get("/api/v1/me").json()["presence"] == "not_ready"
    chat.route(after_seconds=200)
    assert chat.offers_of(conversation)[-1] == ("anna", "expired")


def test_an_answer_resets_the_missed_offers(chat: Chat) -> None:
    anna = chat.desk("anna")
    anna.ready()
    first = chat.conversation()
    chat.route()
    chat.route(after_seconds=31)  # missed once
    second = chat.conversation()
    chat.route(after_seconds=32)  # second offered to her (first is skipped for her)
    assert offered(chat, "anna") == [second]
    assert anna.post(f"/api/v1/offers/{anna.offers()[0]['id']}/reject").status_code == 204
    chat.route(after_seconds=62)  # both offered again (the skips have run out)
    assert offered(chat, "anna") == [first, second]
    assert anna.post(f"/api/v1/offers/{anna.offers()[1]['id']}/reject").status_code == 204
    chat.route(after_seconds=93)  # first missed: once in a row since the last answer
    assert chat.offers_of(first)[-1] == ("anna", "expired")
    assert anna.get("/api/v1/me").json()["presence"] == "ready"


def test_a_rejected_offer_goes_to_the_next_agent(chat: Chat) -> None:
    anna, bob = chat.desk("anna"), chat.desk("bob")
    anna.ready()
    bob.ready()
    conversation = chat.conversation()
    chat.route()
    [offer] = anna.offers()
    assert anna.post(f"/api/v1/offers/{offer['id']}/reject").status_code == 204
    assert anna.post(f"/api/v1/offers/{offer['id']}/reject").status_code == 409
    assert bob.post(f"/api/v1/offers/{offer['id']}/reject").status_code == 404
    chat.route()
    assert chat.offers_of(conversation) == [("anna", "rejected"), ("bob", "offered")]


def test_offers_list_what_the_desktop_shows(chat: Chat) -> None:
    anna = chat.desk("anna")
    anna.ready()
    conversation = chat.conversation(identity="46701112233", text="Where  is\nmy order?")
    chat.route()
    [offer] = anna.offers()
    assert offer == {
        "id": offer["id"],
        "conversation_id": conversation,
        "queue": "support",
        "channel": "WHATSAPP",
        "customer": "46701112233",
        "preview": "Where is my order?",
        "kind": "route",
        "created_at": offer["created_at"],
        "expires_at": offer["expires_at"],
    }
    assert chat.desk("bob").offers() == []
    assert chat.desk("admin").get("/api/v1/offers").status_code == 403


def test_accept_assigns_the_conversation(chat: Chat) -> None:
    anna = chat.desk("anna")
    anna.ready()
    conversation = chat.conversation()
    chat.route()
    answer = anna.accept(anna.offers()[0]["id"])
    assert answer.status_code == 200, answer.text
    item = answer.json()
    assert (item["id"], item["status"], item["assigned_agent"]) == (conversation, "active", "anna")
    mine = anna.get("/api/v1/conversations", params={"assigned": "me", "status": "active"})
    assert [c["id"] for c in mine.json()["items"]] == [conversation]
    assert (
        chat.desk("bob").get("/api/v1/conversations", params={"assigned": "me"}).json()["items"]
        == []
    )
    assert chat.offers_of(conversation) == [("anna", "accepted")]


def test_pick_takes_a_waiting_conversation_and_withdraws_its_offer(chat: Chat) -> None:
    anna, bob, carl = chat.desk("anna"), chat.desk("bob"), chat.desk("carl")
    anna.ready()
    conversation = chat.conversation()
    chat.route()
    answer = bob.post(f"/api/v1/conversations/{conversation}/pick")
    assert answer.status_code == 200, answer.text
    assert answer.json()["assigned_agent"] == "bob"
    assert chat.offers_of(conversation) == [("anna", "withdrawn")]
    again = anna.post(f"/api/v1/conversations/{conversation}/pick")
    assert again.status_code == 409
    assert "another agent took it" in again.json()["error"]["message"]
    assert carl.post(f"/api/v1/conversations/{conversation}/pick").status_code == 404


def test_queue_overview_and_waiting_list(chat: Chat) -> None:
    older = chat.conversation(waited_seconds=50, text="first")
    newer = chat.conversation(waited_seconds=5, text="second")
    chat.conversation("vip", channel="MESSENGER")
    chat.desk("anna").ready()
    chat.desk("anna").ready("not_ready")
    chat.desk("bob").ready()
    chat.route()  # bob gets both support conversations
    accepted = chat.desk("bob").accept(chat.desk("bob").offers()[0]["id"])
    assert accepted.status_code == 200
    overview = chat.desk("anna").get("/api/v1/queues/overview").json()
    assert [{k: v for k, v in q.items() if k != "longest_wait_seconds"} for q in overview] == [
        {"queue": "support", "priority": 0, "waiting": 1, "agents_ready": 1, "agents_busy": 1},
    ]
    assert 0 <= overview[0]["longest_wait_seconds"] < 60
    everything = chat.desk("admin").get("/api/v1/queues/overview").json()
    assert [q["queue"] for q in everything] == ["vip", "sales", "support"]
    waiting = chat.desk("anna").get("/api/v1/queues/support/waiting").json()
    assert [(w["id"], w["position"], w["offered"], w["preview"]) for w in waiting] == [
        (newer, 1, True, "second")
    ]
    assert older != newer
    assert chat.desk("anna").get("/api/v1/queues/vip/waiting").status_code == 404
    assert chat.desk("anna").get("/api/v1/queues/nope/waiting").status_code == 404


def principal(chat: Chat, login: str) -> Principal:
    chat.desk(login)  # makes a token
    with transaction(chat.runtime.sessions) as session:
        token_id = session.query(ApiTokenRow.id).join(AgentRow).filter(AgentRow.login == login)
        return Principal(token_id=token_id.first()[0], role="agent", agent_login=login)


def race(calls: list[Callable[[], Any]]) -> list[str]:
    """Run the calls at once on threads; each result is "ok" or the conflict's message."""
    barrier = threading.Barrier(len(calls))
    results: list[str] = [""] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            calls[index]()
            results[index] = "ok"
        except ConflictError as exc:
            results[index] = str(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("rounds", [4])
def test_concurrent_accept_and_picks_exactly_one_wins(
    chat: Chat, database_url: str, tmp_path: Path, rounds: int
) -> None:
    """Two "nodes" (two runtimes, their own engines, one database): anna accepts her offer on
    both at once while bob and dana pick the same conversation on both."""
    other = make_runtime(database_url, tmp_path / "node2")
    try:
        anna, bob, dana = (principal(chat, login) for login in ("anna", "bob", "dana"))
        directory = chat.directory.get()
        chat.desk("anna").ready()
        for _ in range(rounds):
            conversation = chat.conversation()
            chat.route()
            [offer] = chat.desk("anna").offers()
            assert offer["conversation_id"] == conversation
            calls: list[Callable[[], Any]] = []
            for node in (chat.runtime, other):
                calls += [
                    partial(chat_server.accept_offer, node, anna, offer["id"]),
                    partial(chat_server.pick, node, bob, conversation, directory),
                    partial(chat_server.pick, node, dana, conversation, directory),
                ]
            results = race(calls)
            assert results.count("ok") == 1, results
            winner = chat.row(conversation).assigned_agent
            assert winner in ("anna", "bob", "dana")
            assert chat.row(conversation).status == "active"
            # the losers' answers say why
            assert all(
                r == "ok" or "no longer waiting" in r or "was " in r or "no room" in r
                for r in results
            ), results
            end = chat.desk(winner).post(f"/api/v1/conversations/{conversation}/end", json={})
            assert end.status_code == 200, end.text
    finally:
        other.close()


def test_routing_passes_on_two_nodes_at_once_offer_each_conversation_once(
    chat: Chat, database_url: str, tmp_path: Path
) -> None:
    other = make_runtime(database_url, tmp_path / "node2")
    try:
        chat.desk("anna").ready()
        chat.desk("bob").ready()
        conversations = [chat.conversation() for _ in range(8)]
        routers = [chat.router, Router(other, DirectoryCache(other))]
        passes: list[Callable[[], Any]] = [
            partial(routers[i % 2].run_pass, chat.start) for i in range(6)
        ]
        assert race(passes) == ["ok"] * 6
        offers = [o for c in conversations for o in chat.offers_of(c)]
        assert sorted(offers) == [("anna", "offered")] * 2 + [("bob", "offered")] * 2
        assert all(len(chat.offers_of(c)) <= 1 for c in conversations)
    finally:
        other.close()


def test_the_pass_skips_a_conversation_another_transaction_holds(
    chat: Chat, database_url: str
) -> None:
    """PostgreSQL: the pass reads conversations FOR UPDATE SKIP LOCKED, so a customer's
    message being threaded (the processor holds the row) never blocks it or deadlocks with
    it. (SQLite has one writer at a time: nothing to skip.)"""
    if database_url.startswith("sqlite"):
        pytest.skip("row locks are PostgreSQL's")
    held, free = chat.conversation(), chat.conversation()
    with chat.runtime.engine.connect() as other:
        other.execute(
            select(ConversationRow.id).where(ConversationRow.id == held).with_for_update()
        )
        chat.route()  # returns although the row is locked
        assert chat.row(held).admitted_at is None
        assert chat.row(free).admitted_at is not None
        other.rollback()
    chat.route(after_seconds=1)
    assert chat.row(held).admitted_at is not None


def test_with_every_agent_full_the_waiting_conversations_are_left_as_they_are(
    chat: Chat,
) -> None:
    """Nobody could take an offer: the pass does not read the waiting conversations (a busy
    hour has thousands), so a reopened one keeps its last agent for when one has room."""
    chat.desk("anna").ready()
    first, second = chat.conversation(), chat.conversation()
    chat.route()
    assert offered(chat, "anna") == [first, second]  # two chats: anna is full
    reopened = chat.conversation(preferred_agent="anna")
    chat.route(after_seconds=1)
    assert chat.offers_of(reopened) == []
    assert chat.row(reopened).preferred_agent == "anna"
    chat.desk("bob").ready()  # room again, but not anna's: routed like any other
    chat.route(after_seconds=2)
    assert chat.offers_of(reopened) == [("bob", "offered")]
    assert chat.row(reopened).preferred_agent is None


def test_a_free_agent_gets_its_reopened_conversation_from_another_queue(chat: Chat) -> None:
    """The pass reads the queues of the agents with room, and the conversations whose last
    agent has room wherever they wait (a transfer may have moved them)."""
    moved = chat.conversation("sales", channel="SMS", preferred_agent="anna")
    chat.desk("anna").ready()  # support only
    chat.route()
    assert chat.offers_of(moved) == [("anna", "offered")]
    [offer] = chat.desk("anna").offers()
    assert offer["kind"] == "preferred"
