"""EMV-style TLV: BER-TLV's layout with the private two-byte tags smart cards use (ISO 7816-4 / EMV), strict.

Only the canonical form is accepted: tags of one to three bytes, definite lengths in their shortest form. A value
that parses re-encodes to the same bytes, which is what makes signed TLV structures safe to compare.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wallet.errors import EncodingError


def encode_tag(tag: int) -> bytes:
    """Return the bytes of ``tag`` (an int such as 0x5F2A or 0xDF01)."""
    if tag <= 0:
        raise ValueError(f"bad tag {tag:#x}")
    return tag.to_bytes((tag.bit_length() + 7) // 8, "big")


def encode_length(n: int) -> bytes:
    """Return the shortest definite-form encoding of length ``n``."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(body) > 3:
        raise ValueError("TLV value too long")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes) -> bytes:
    """Encode one TLV."""
    return encode_tag(tag) + encode_length(len(value)) + value


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    start = pos
    if pos >= len(data):
        raise EncodingError("TLV ends before a tag")
    first = data[pos]
    pos += 1
    if first in (0x00, 0xFF):
        raise EncodingError(f"padding byte {first:#04x} where a tag should be")
    if first & 0x1F == 0x1F:
        while True:
            if pos >= len(data):
                raise EncodingError("TLV ends inside a multi-byte tag")
            b = data[pos]
            pos += 1
            if b & 0x80 == 0:
                break
            if pos - start >= 3:
                raise EncodingError("TLV tag longer than 3 bytes")
    return int.from_bytes(data[start:pos], "big"), pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise EncodingError("TLV ends before a length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 3:
        raise EncodingError("indefinite or oversized TLV length")
    if pos + count > len(data):
        raise EncodingError("TLV ends inside a length")
    n = int.from_bytes(data[pos : pos + count], "big")
    if encode_length(n) != data[pos - 1 : pos + count]:
        raise EncodingError("TLV length not in its shortest form")
    return n, pos + count


def decode(data: bytes) -> list[tuple[int, bytes]]:
    """Decode a sequence of TLVs into ``(tag, value)`` pairs; constructed values stay as raw bytes."""
    if not isinstance(data, bytes):
        data = bytes(data)
    out: list[tuple[int, bytes]] = []
    end = len(data)
    pos = 0
    while pos < end:
        # Fast paths for the common shapes (one- or two-byte tag, short length); the rest goes the long way.
        first = data[pos]
        if first & 0x1F != 0x1F and first:
            tag = first
            pos += 1
        elif first & 0x1F == 0x1F and first != 0xFF and pos + 1 < end and data[pos + 1] < 0x80:  # two-byte tag
            tag = first << 8 | data[pos + 1]
            pos += 2
        else:
            tag, pos = _read_tag(data, pos)
        if pos < end and data[pos] < 0x80:
            n = data[pos]
            pos += 1
        else:
            n, pos = _read_length(data, pos)
        nxt = pos + n
        if nxt > end:
            raise EncodingError(f"TLV value of tag {tag:#x} runs past the end ({n} bytes announced)")
        out.append((tag, data[pos:nxt]))
        pos = nxt
    return out


def decode_one(data: bytes, tag: int) -> bytes:
    """Decode exactly one TLV with the given tag and return its value."""
    items = decode(data)
    if len(items) != 1 or items[0][0] != tag:
        raise EncodingError(f"expected a single TLV with tag {tag:#x}")
    return items[0][1]


def decode_map(data: bytes) -> dict[int, bytes]:
    """Decode TLVs into a dict, refusing duplicate tags."""
    out: dict[int, bytes] = {}
    for tag, value in decode(data):
        if tag in out:
            raise EncodingError(f"duplicate TLV tag {tag:#x}")
        out[tag] = value
    return out


def uint(value: bytes, size: int, name: str) -> int:
    """Read a fixed-size big-endian unsigned integer field."""
    if len(value) != size:
        raise EncodingError(f"{name}: expected {size} bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def text(value: bytes, size: int | None, name: str, digits: bool = False) -> str:
    """Read an ASCII text field, optionally of fixed size and digits only."""
    if size is not None and len(value) != size:
        raise EncodingError(f"{name}: expected {size} characters, got {len(value)}")
    try:
        s = value.decode("ascii")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"{name}: not ASCII") from exc
    if digits and not s.isdigit():
        raise EncodingError(f"{name}: not all digits")
    if not s.isprintable():
        raise EncodingError(f"{name}: not printable")
    return s


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a TLV record: its tag, the attribute it maps to, its kind and fixed size.

    Kinds: ``uint`` (big-endian, ``size`` bytes), ``digits`` / ``text`` (ASCII, ``size`` characters or any length
    when ``size`` is None), ``bytes`` (``size`` bytes or any length). An ``optional`` field may be absent (None).
    """

    tag: int
    name: str
    kind: str
    size: int | None = None
    optional: bool = False
    maximum: int | None = None  # for ``uint``: the largest value accepted
    tag_bytes: bytes = field(init=False, repr=False, compare=False)
    header: bytes | None = field(init=False, repr=False, compare=False)  # tag + length, for a fixed size
    plain_uint: bool = field(init=False, repr=False, compare=False)  # a fixed-size uint with no maximum

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag_bytes", encode_tag(self.tag))
        object.__setattr__(self, "plain_uint", self.kind == "uint" and self.size is not None and self.maximum is None)
        object.__setattr__(self, "header", None if self.size is None else self.tag_bytes + encode_length(self.size))

    def encode(self, value: Any) -> bytes:
        if self.kind == "uint":
            return int(value).to_bytes(self.size or 8, "big")
        if self.kind in ("digits", "text"):
            return str(value).encode("ascii")
        return bytes(value)

    def encode_tlv(self, value: Any) -> bytes:
        """The whole TLV of ``value``: tag, length and value bytes."""
        v = self.encode(value)
        if self.header is not None and len(v) == self.size:
            return self.header + v
        return self.tag_bytes + encode_length(len(v)) + v

    def decode(self, value: bytes) -> Any:
        if self.kind == "uint":
            n = uint(value, self.size or 8, self.name)
            if self.maximum is not None and n > self.maximum:
                raise EncodingError(f"{self.name}: {n} is out of range")
            return n
        if self.kind in ("digits", "text"):
            return text(value, self.size, self.name, digits=self.kind == "digits")
        if self.size is not None and len(value) != self.size:
            raise EncodingError(f"{self.name}: expected {self.size} bytes, got {len(value)}")
        return value


def encode_record(tag: int, fields: Sequence[Field], obj: Any) -> bytes:
    """Encode the attributes of ``obj`` named by ``fields``, in order, inside one constructed TLV."""
    parts = []
    for f in fields:
        value = getattr(obj, f.name)
        if value is None:
            if not f.optional:
                raise ValueError(f"{f.name} is required")
            continue
        parts.append(f.encode_tlv(value))
    return encode(tag, b"".join(parts))


def decode_record(raw: bytes, tag: int, fields: Sequence[Field], what: str) -> dict[str, Any]:
    """Decode a record written by :func:`encode_record`: exactly these fields, in this order, canonical."""
    items = decode(decode_one(raw, tag))
    out: dict[str, Any] = {}
    i = 0
    n = len(items)
    for f in fields:
        if i < n and items[i][0] == f.tag:
            value = items[i][1]
            if f.plain_uint and len(value) == f.size:  # the common case, without the call
                out[f.name] = int.from_bytes(value, "big")
            else:
                out[f.name] = f.decode(value)
            i += 1
        elif f.optional:
            out[f.name] = None
        else:
            raise EncodingError(f"{what}: {f.name} missing or out of order")
    if i != len(items):
        raise EncodingError(f"{what}: unexpected tag {items[i][0]:#x}")
    return out


_UINT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class FixedRecord:
    """A record (as :func:`encode_record` writes it) whose fields all have fixed sizes and none is optional.

    Its canonical encoding is one template: tag and length bytes with the values at fixed offsets. :meth:`unpack`
    reads it with one :class:`struct.Struct` and checks every tag and length byte in one comparison, with each
    field's rules (digits, printable ASCII, maximum) as :meth:`Field.decode` has them (four times faster than
    the generic walk); :meth:`decode` goes the generic way for anything off the template, so results and errors
    are those of :func:`decode_record`. Writing stays with :func:`encode_record`, which is as fast here.
    """

    def __init__(self, tag: int, fields: Sequence[Field], what: str) -> None:
        fixed: list[tuple[Field, int, bytes]] = []  # each field with its size and header, both known
        for f in fields:
            if f.size is None or f.header is None or f.optional:
                raise ValueError(f"{what}: a fixed record needs fixed-size, required fields")
            fixed.append((f, f.size, f.header))
        self.tag, self.fields, self.what = tag, tuple(fields), what
        self.names = tuple(f.name for f in self.fields)
        value_size = sum(len(header) + size for _, size, header in fixed)
        head = encode_tag(tag) + encode_length(value_size)
        codes: list[str] = []
        structure: list[bytes] = []
        structure_at: list[int] = []
        values_at: list[int] = []
        for f, size, header in fixed:
            piece = head + header
            head = b""
            structure_at.append(len(codes))
            structure.append(piece)
            codes.append(f"{len(piece)}s")
            values_at.append(len(codes))
            codes.append(_UINT_CODES.get(size, f"{size}s") if f.kind == "uint" else f"{size}s")
        self._struct = struct.Struct(">" + "".join(codes))
        self.size = self._struct.size
        self._structure = tuple(structure)
        self._structure_of = operator.itemgetter(*structure_at, structure_at[0])  # always a tuple
        self._values_of = operator.itemgetter(*values_at, values_at[0])
        kinds = [f.kind for f in self.fields]
        self._digits = tuple(k for k, kind in enumerate(kinds) if kind == "digits")
        self._text = tuple(k for k, kind in enumerate(kinds) if kind == "text")
        self._uint_bytes = tuple(k for k, f in enumerate(self.fields) if f.kind == "uint" and f.size not in _UINT_CODES)
        self._maximum = tuple((k, f.maximum) for k, f in enumerate(self.fields) if f.maximum is not None)

    def unpack(self, raw: bytes) -> list[Any] | None:
        """The field values (in field order) of a record on the template, or None for anything else."""
        if len(raw) != self.size:
            return None
        values = self._struct.unpack(raw)
        if self._structure_of(values)[:-1] != self._structure:
            return None
        out = list(self._values_of(values)[:-1])
        for k in self._digits:
            v = out[k]
            if not v.isdigit():  # bytes.isdigit: ASCII digits only, hence ASCII and printable
                return None
            out[k] = v.decode("ascii")
        for k in self._text:
            v = out[k]
            if not v.isascii():
                return None
            v = v.decode("ascii")
            if not v.isprintable():
                return None
            out[k] = v
        for k in self._uint_bytes:
            out[k] = int.from_bytes(out[k], "big")
        for k, maximum in self._maximum:
            if out[k] > maximum:
                return None
        return out

    def decode(self, raw: bytes) -> dict[str, Any]:
        """Like :func:`decode_record` (the same values, or the same :class:`EncodingError`)."""
        values = self.unpack(raw)
        if values is None:
            return decode_record(raw, self.tag, self.fields, self.what)
        return dict(zip(self.names, values, strict=True))
