"""Every payload is written as the standard library's compact JSON, whichever encoder
writes it (store.messages.encode_json): orjson for plain values, the standard encoder for
the rest. The text must not change between versions: a user message's idempotency hash is
taken over it."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import InvalidMessage
from store.messages import Limits, _check_json_value, encode_json

STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
LIMITS = Limits()

# any character but NUL (refused) — lone surrogates included: orjson refuses them, and the
# standard encoder must then write what it always wrote
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=40)
PLAIN_LEAF = (
    st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | TEXT
)  # fmt: skip
PLAIN = st.recursive(
    PLAIN_LEAF,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(TEXT, inner, max_size=5)
    ),
    max_leaves=40,
)


class Colour(enum.IntEnum):
    RED = 1


class Label(str):
    pass


FINITE = st.floats(allow_nan=False, allow_infinity=False)
ANY_LEAF = PLAIN_LEAF | FINITE | st.sampled_from([Colour.RED, Label("x"), True, 1e16, 1e-7])
ANY = st.recursive(
    ANY_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(TEXT, inner, max_size=4)
        | st.dictionaries(TEXT, inner, max_size=3).map(OrderedDict)
    ),
    max_leaves=30,
)


def standard(value: Any) -> str | None:
    try:
        return STANDARD(value)
    except (ValueError, TypeError):
        return None


@settings(max_examples=1500, deadline=None)
@given(PLAIN)
def test_plain_values_are_written_as_the_standard_library_writes_them(value: Any) -> None:
    assert _check_json_value(value, "v") is True  # the fast path is the one taken
    assert encode_json(value, "v", LIMITS) == STANDARD(value)


@settings(max_examples=1500, deadline=None)
@given(ANY)
def test_every_value_is_written_as_the_standard_library_writes_it(value: Any) -> None:
    assert encode_json(value, "v", LIMITS) == STANDARD(value)


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        [1e16],
        {"t": 0.1},
        Colour.RED,
        [Label("x")],
        OrderedDict(a=1),
        MappingProxyType({"a": 1}),
    ],
    ids=["float", "float-exponent", "nested-float", "int-enum", "str-subclass", "ordered",
         "mapping-proxy"],
)  # fmt: skip
def test_floats_subclasses_and_other_mappings_are_not_plain(value: Any) -> None:
    assert _check_json_value(value, "v") is False
    expected = STANDARD(dict(value) if isinstance(value, MappingProxyType) else value)
    assert encode_json(value, "v", LIMITS) == expected


def test_what_orjson_refuses_the_standard_encoder_writes() -> None:
    deep: Any = 1
    for _ in range(300):  # orjson stops at 254 levels
        deep = [deep]
    for value in (2**64, -(2**63) - 1, "\ud800", deep):
        assert _check_json_value(value, "v") is True
        assert encode_json(value, "v", LIMITS) == STANDARD(value)


def test_refusals_are_unchanged() -> None:
    for bad in ({"a": float("nan")}, ["\x00"], {1: "a"}, {"a": object()}):
        with pytest.raises(InvalidMessage):
            encode_json(bad, "v", LIMITS)
    with pytest.raises(InvalidMessage, match="over the limit"):
        encode_json("é" * 600, "v", Limits(max_message_bytes=1000))
