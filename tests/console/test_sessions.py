"""Console sessions without a clock: idle and absolute timeouts, CSRF comparison, bounds."""

from __future__ import annotations

from recorder.console.sessions import MAX_SESSIONS, SessionStore, same_token


def test_a_session_lives_while_used_and_dies_when_idle() -> None:
    store = SessionStore(idle_seconds=900)
    session = store.open("lead", now=0.0)
    assert store.get(session.token, 600.0) is session
    assert store.get(session.token, 1400.0) is session  # 800 s after the last use
    assert store.get(session.token, 2301.0) is None  # 901 s idle
    assert store.get(session.token, 2302.0) is None and len(store) == 0


def test_a_session_ends_after_the_working_day_whatever_the_activity() -> None:
    store = SessionStore(idle_seconds=900, absolute_seconds=3600)
    session = store.open("lead", now=0.0)
    for now in range(0, 3600, 600):
        assert store.get(session.token, float(now)) is session
    assert store.get(session.token, 3601.0) is None


def test_tokens_are_random_and_closing_forgets_them() -> None:
    store = SessionStore(idle_seconds=900)
    first, second = store.open("lead", 0.0), store.open("lead", 0.0)
    assert first.token != second.token and first.csrf != second.csrf
    assert len(first.token) >= 40 and store.get("forged", 1.0) is None
    store.close(first.token)
    assert store.get(first.token, 1.0) is None and store.get(second.token, 1.0) is second
    store.close_person("lead")
    assert len(store) == 0


def test_the_store_is_bounded() -> None:
    store = SessionStore(idle_seconds=900)
    for index in range(MAX_SESSIONS + 5):
        store.open(f"p{index}", float(index) / 1000)
    assert len(store) == MAX_SESSIONS


def test_csrf_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc")
    assert (
        not same_token("abc", "abd") and not same_token("abc", "") and not same_token("abc", None)
    )
