"""Canonical leaf bytes, and strict JSON: what the ledger signs, anchors and reads back.

Owns: the leaf schema (docs/proofs.md lists it field by field) and its encoding, and
``loads_strict``, the one parser for signed or anchored JSON (I-JSON, RFC 7493: duplicate member
names, NaN/Infinity, invalid UTF-8 and lone surrogates refused). All leaf fields are safe integers
or ASCII strings that need no escaping, so JCS output is compact JSON with sorted keys, produced by
msgspec's compiled encoder; ``leaf_bytes_reference`` goes through the ``rfc8785`` library and the
tests prove both agree. A ``Leaf`` built with a value outside that domain (a float, a bool, an
integer beyond ±(2^53−1), a string that is not an id or lowercase hex) is refused when it is built
(``CanonicalError``), so no encoder here ever writes bytes that RFC 8785 would write differently.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final

import msgspec
import rfc8785

from device.errors import WattproofError

LEAF_VERSION = 1
MAX_SAFE_INT: Final = 2**53 - 1  # RFC 8785 §3.2.2.3 / I-JSON: integers beyond are not exact
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # device.wire.ID_PATTERN
_HEX_RE: Final = re.compile(r"(?:[0-9a-f]{2}){0,64}")


class CanonicalError(WattproofError, ValueError):
    """A value that canonical (RFC 8785) or strict (RFC 7493) JSON cannot carry exactly."""


class StrictJSONError(CanonicalError):
    """Bytes that are not strict JSON: duplicate member names, NaN/Infinity, invalid UTF-8 or a lone
    surrogate, or not JSON at all."""


def _safe_int(name: str, value: object) -> None:
    if type(value) is not int:  # bool, float, numpy scalars: each would be written differently
        raise CanonicalError(f"leaf {name} must be an int, not {type(value).__name__} ({value!r})")
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise CanonicalError(f"leaf {name} {value} is outside ±(2^53−1): RFC 8785 cannot write it exactly")


def _matching(name: str, value: object, pattern: re.Pattern[str]) -> None:
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise CanonicalError(f"leaf {name} {value!r} is not in the leaf's alphabet (no escapes: {pattern.pattern})")


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    """A stored reading, as committed to by the ledger. Checked when built (``CanonicalError``)."""

    v: int = LEAF_VERSION
    device: str
    ts_ms: int
    channel: str
    energy_wh: int
    power_w: int
    seq: int
    idx: int
    frame_sha256: str  # hex SHA-256 of the signed frame the reading came in: links to the device signature

    def __post_init__(self) -> None:
        for name in ("v", "ts_ms", "energy_wh", "power_w", "seq", "idx"):
            _safe_int(name, getattr(self, name))
        _matching("device", self.device, _ID_RE)
        _matching("channel", self.channel, _ID_RE)
        _matching("frame_sha256", self.frame_sha256, _HEX_RE)


_encoder = msgspec.json.Encoder(order="sorted")


def leaf_bytes(leaf: Leaf) -> bytes:
    return _encoder.encode(leaf)


def leaf_bytes_reference(leaf: Leaf) -> bytes:
    return rfc8785.dumps(msgspec.to_builtins(leaf))


def leaves_bytes(leaves: Iterable[Leaf]) -> list[bytes]:
    enc = _encoder.encode
    return [enc(x) for x in leaves]


# --- strict JSON (TEAM decision 4; RFC 7493 I-JSON) ----------------------------------------


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(items)
    if len(out) != len(items):
        seen: set[str] = set()
        for k, _ in items:
            if k in seen:
                raise StrictJSONError(f"duplicate member name {k!r} (RFC 7493 §2.3)")
            seen.add(k)
    return out


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON (RFC 7493 §2.2)")


def _no_lone_surrogates(value: Any) -> None:
    """Every string (member names too) is Unicode text: a ``\\ud800`` escape alone is not (RFC 7493 §2.1)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise StrictJSONError(f"string {v[:20]!r} holds a lone surrogate at {exc.start} (RFC 7493 §2.1)") from None
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v)
            stack.extend(v.values())


def loads_strict(data: bytes | str) -> Any:
    """Parse signed or anchored JSON strictly (I-JSON, RFC 7493), or raise ``StrictJSONError``.

    Refused: duplicate member names (at any depth), ``NaN``/``Infinity``/``-Infinity``, bytes that
    are not UTF-8 (no BOM, no UTF-16/32 guessing), lone surrogates written as escapes, anything that
    is not JSON (RFC 8259), and nesting deeper than Python's recursion limit."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJSONError(f"not UTF-8 at byte {exc.start} (RFC 7493 §2.1)") from None
    elif isinstance(data, str):
        text = data
    else:
        raise StrictJSONError(f"JSON text must be bytes or str, not {type(data).__name__}")
    if text.startswith("\ufeff"):
        raise StrictJSONError("byte order mark before the JSON text (RFC 8259 §8.1)")
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except StrictJSONError:
        raise
    except RecursionError:
        raise StrictJSONError("JSON nested too deeply") from None
    except ValueError as exc:
        raise StrictJSONError(f"not JSON: {exc}") from None
    _no_lone_surrogates(value)
    return value
