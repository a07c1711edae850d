"""Choosing a replica: least in flight, conversation stickiness, replicas down or reserved."""

from __future__ import annotations

from service.serving.engines.replicas import ReplicaSet


def replicas(n=3, slack=2) -> ReplicaSet:
    rs = ReplicaSet([f"http://r{i}" for i in range(n)], slack=slack)
    for r in rs.replicas:
        rs.mark_up(r)
    return rs


def test_a_conversation_sticks_to_one_replica_while_it_is_not_much_busier():
    rs = replicas()
    first = rs.pick("conv-1")
    rs.done(first)
    # Up to `slack` more in flight than the idle replicas: it keeps the conversation.
    assert all(rs.pick("conv-1") is first for _ in range(3))
    other = rs.pick("conv-1")  # 3 more than the idle ones: the least busy replica instead
    assert other is not first and other.in_flight == 1


def test_without_a_key_the_least_busy_replica_is_chosen():
    rs = replicas()
    picked = [rs.pick(None) for _ in range(3)]
    assert sorted(r.url for r in picked) == ["http://r0", "http://r1", "http://r2"]


def test_conversations_spread_and_a_replica_leaving_moves_only_its_own():
    rs = replicas()
    home = {}
    for i in range(60):
        r = rs.pick(f"c{i}")
        home[f"c{i}"] = r.url
        rs.done(r)
    assert len(set(home.values())) == 3
    gone = rs.replicas[0]
    rs.mark_down(gone, "test")
    for key, url in home.items():
        r = rs.pick(key)
        rs.done(r)
        assert r.url != gone.url
        if url != gone.url:
            assert r.url == url  # rendezvous hashing: the others keep their conversations
    assert gone.failures == 1 and gone.error == "test"


def test_a_reserved_replica_takes_no_request_until_it_is_released():
    rs = replicas(n=1)
    held = rs.reserve()
    assert held is not None and rs.reserve() is None
    assert rs.pick("c") is None and rs.waiting_for_reserved()
    rs.unreserve(held)
    assert rs.pick("c") is held
    assert rs.reserve() is None  # something in flight: scoring waits for an idle replica


def test_no_replica_up_means_none():
    rs = ReplicaSet(["http://a"])
    assert rs.pick("c") is None and not rs.waiting_for_reserved()
