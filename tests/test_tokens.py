"""Signed open and click tokens."""

from __future__ import annotations

import pytest

from trackpixel import tokens

SECRET = b"k" * 32


def test_round_trip() -> None:
    token = tokens.sign(SECRET, "open", {"s": "s_1", "cmp": "c", "r": "r1"})

    assert tokens.verify(SECRET, "open", token) == {"s": "s_1", "cmp": "c", "r": "r1"}


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    lambda t: "X" + t[1:],
    lambda t: t.split(".")[0],
    lambda t: "",
    lambda t: t + "." + t,
])
def test_tampered_rejected(mutate: object) -> None:
    token = tokens.sign(SECRET, "click", {"d": "https://example.com"})

    with pytest.raises(tokens.BadToken):
        tokens.verify(SECRET, "click", mutate(token))  # type: ignore[operator]


def test_purpose_is_signed() -> None:
    token = tokens.sign(SECRET, "open", {"s": "s_1"})

    with pytest.raises(tokens.BadToken):
        tokens.verify(SECRET, "click", token)


def test_other_secret_rejected() -> None:
    token = tokens.sign(SECRET, "open", {"s": "s_1"})

    with pytest.raises(tokens.BadToken):
        tokens.verify(b"x" * 32, "open", token)
