"""The jurisdiction resolver of a quote- or payment-naming call remembers what it found (a
quote's jurisdiction and a payment's quote never change), so a call naming something known is
authorized with no thread and no database read; "names nothing" is never remembered; at most
``keep`` answers, the least recently used dropped first."""

from __future__ import annotations

from ledger.rpc.authorization import RememberingResolver


def _resolver(stored: dict[str, str], asked: list[str], keep: int = 3) -> RememberingResolver:
    def find(request: object) -> str | None:
        asked.append(str(request))
        return stored.get(str(request))

    return RememberingResolver(find, lambda request: str(request) or None, keep=keep)


def test_what_was_found_is_known_and_not_asked_again() -> None:
    asked: list[str] = []
    resolver = _resolver({"q-1": "KW"}, asked)
    assert resolver.known("q-1") is None
    assert resolver("q-1") == "KW"
    assert resolver.known("q-1") == "KW"
    assert asked == ["q-1"]


def test_names_nothing_is_not_remembered() -> None:
    asked: list[str] = []
    stored: dict[str, str] = {}
    resolver = _resolver(stored, asked)
    assert resolver("q-2") is None
    assert resolver.known("q-2") is None
    stored["q-2"] = "KW"  # made since
    assert resolver("q-2") == "KW" and resolver.known("q-2") == "KW"
    assert resolver.known("") is None  # a request naming nothing


def test_told_answers_are_known_and_the_least_recently_used_go_first() -> None:
    asked: list[str] = []
    resolver = _resolver({}, asked, keep=3)
    for name, jurisdiction in (("q-a", "KW"), ("q-b", "SA"), ("q-c", "KW")):
        resolver.remember(name, jurisdiction)
    assert resolver.known("q-a") == "KW"  # used: now the most recent
    resolver.remember("q-d", "SA")  # one too many: q-b, the least recently used, goes
    assert [resolver.known(name) for name in ("q-a", "q-b", "q-c", "q-d")] == [
        "KW",
        None,
        "KW",
        "SA",
    ]
    assert asked == []
