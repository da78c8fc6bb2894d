"""tasks.locking: when the holder deletes its marker without reading it first (one request on release)."""

from __future__ import annotations

from tasks.locking import _Held


def test_a_marker_just_written_is_surely_the_holders() -> None:
    held = _Held()
    assert not held.surely_ours()  # never written: read before deleting
    held.wrote()
    assert held.surely_ours()


def test_a_marker_taken_over_is_never_deleted_unread() -> None:
    held = _Held()
    held.wrote()
    held.lost = True  # a beat found it naming another holder
    assert not held.surely_ours()


def test_a_marker_not_written_for_half_the_staleness_is_read_first() -> None:
    from tasks.locking import STALE_S

    held = _Held()
    held.wrote()
    assert held.written_at is not None
    held.written_at -= STALE_S / 2  # beats failed since: a waiter may have taken it over meanwhile
    assert not held.surely_ours()
