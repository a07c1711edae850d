"""Leases of a remote engine's versions: unloaded only once the last request is done."""

from __future__ import annotations

import pytest

from service.serving.engines.leases import Leases


def test_a_version_asked_to_unload_goes_after_its_last_lease():
    leases = Leases()
    leases.add("a@v1", "/x")
    leases.acquire("a@v1")
    leases.acquire("a@v1")
    leases.request_unload("a@v1")
    assert leases.draining() and leases.take_idle() == []
    assert not leases.release("a@v1")
    assert leases.release("a@v1")  # the last one: the caller sweeps
    assert leases.take_idle() == ["a@v1"] and "a@v1" not in leases.loaded and not leases.draining()
    with pytest.raises(KeyError):
        leases.acquire("a@v1")


def test_keep_loaded_calls_off_a_pending_unload():
    leases = Leases()
    leases.add("a@v1", "/x")
    leases.request_unload("a@v1")
    assert leases.keep_loaded("a@v1") and not leases.draining()
    assert leases.take_idle() == [] and "a@v1" in leases.loaded
    assert not leases.keep_loaded("b@v1")
    leases.acquire(None)  # the base model needs no lease
    assert not leases.release(None)
