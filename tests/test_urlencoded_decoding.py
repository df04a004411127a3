"""The form decoder's fast path (emulator.wire.params._unquote) decodes exactly as urllib does."""

from __future__ import annotations

from urllib.parse import quote_from_bytes, unquote_to_bytes

from hypothesis import given
from hypothesis import strategies as st

from emulator.wire.params import _unquote, parse_urlencoded

# Bytes that make percent-decoding interesting: escapes, hex digits, backslashes, x, non-ASCII.
TRICKY = st.lists(
    st.sampled_from([b"%", b"%%", b"%2", b"%25", b"%41", b"%4a", b"%zz", b"\\", b"\\x", b"x"])
    | st.sampled_from([b"A", b"f", b"0", b"9", b"+", b"&", b"=", b"\xc3\xa9", b"\xff", b"\x00"])
    | st.binary(max_size=4)
).map(b"".join)


@given(TRICKY)
def test_unquote_is_urllibs(raw: bytes) -> None:
    assert _unquote(raw) == unquote_to_bytes(raw)


@given(st.binary(max_size=64))
def test_quoted_bytes_come_back(raw: bytes) -> None:
    assert _unquote(quote_from_bytes(raw, safe=b"").encode("ascii")) == raw


def test_a_form_field_with_every_escape() -> None:
    value = "".join(chr(code) for code in range(1, 256)) + "😀"
    body = b"api_key=k&mapping=" + quote_from_bytes(value.encode("utf-8"), safe=b"").encode()
    assert parse_urlencoded(body) == [("api_key", "k"), ("mapping", value)]
