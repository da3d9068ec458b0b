"""TFRecord files and ``tf.train.Example`` records without TensorFlow or protobuf.

The DeepMind multi-object datasets ship as GZIP-compressed TFRecord files of serialized
``tf.train.Example`` messages. Both formats are small
and stable, so they are read here by hand:

* A TFRecord record is ``uint64 length | uint32 masked_crc32c(length) | data |
  uint32 masked_crc32c(data)``, all little-endian; the mask is
  ``((crc >> 15) | (crc << 17)) + 0xa282ead8``. A record whose checksums do not match, or a
  file that ends inside a record, raises :class:`TFRecordError` naming the file and record.
* ``Example { Features features = 1 }``, ``Features { map<string, Feature> feature = 1 }``,
  ``Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List
  int64_list = 3 } }``, each list a ``repeated`` field 1 (packed for floats and ints).

DeepMind stores every image and mask as a ``bytes_list`` with one 1-byte string per pixel
value, i.e. about a million three-byte entries ``0x0A 0x01 <byte>`` per CLEVR record; a
Python loop over them would take seconds, so :class:`BytesList` recognises entries of one
common length with a vectorised stride check. CRC32C is likewise computed with numpy
(:func:`crc32c`), the only way to verify gigabytes of records in pure Python at a usable speed.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Union

import numpy as np

# ---------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF.
_POLY = 0x82F63B78
_CHUNK = 256  # bytes per row of the vectorised CRC; the position table is 256 x 256 uint32


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()


def _zero_byte(register: np.ndarray) -> np.ndarray:
    """Advance CRC registers over one zero byte (vectorised)."""
    return _TABLE[register & 0xFF] ^ (register >> 8)


def _position_table() -> np.ndarray:
    """``table[p, b]``: register after a chunk holding byte ``b`` at position ``p``, zeros elsewhere.

    The register update is linear over GF(2), so the register after a whole chunk (started at
    0) is the xor over positions of these contributions.
    """
    rows = [_TABLE]
    for _ in range(_CHUNK - 1):
        rows.append(_zero_byte(rows[-1]))
    return np.stack(rows[::-1])


_POSITION = _position_table()
_SHIFTS: List[np.ndarray] = []  # _SHIFTS[j][k, v]: register v << 8k advanced over _CHUNK * 2**j zeros


def _shift_table(level: int) -> np.ndarray:
    while len(_SHIFTS) <= level:
        if not _SHIFTS:
            table = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None])
            for _ in range(_CHUNK):
                table = _zero_byte(table)
        else:  # advancing twice as far = applying the previous level's shift twice
            table = _apply_shift(_SHIFTS[-1], _SHIFTS[-1])
        _SHIFTS.append(table.astype(np.uint32))
    return _SHIFTS[level]


def _apply_shift(table: np.ndarray, register: np.ndarray) -> np.ndarray:
    return (table[0][register & 0xFF] ^ table[1][(register >> 8) & 0xFF]
            ^ table[2][(register >> 16) & 0xFF] ^ table[3][register >> 24])


def _crc_register_bytewise(data: bytes, register: int) -> int:
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _crc_register_vectorised(data: np.ndarray) -> int:
    """Register after ``data`` starting from 0: per-chunk registers, then a pairwise tree merge."""
    rows = -(-data.size // _CHUNK)
    levels = max(rows - 1, 0).bit_length()
    # Leading zero bytes leave a zero register unchanged, so pad at the front to 2**levels rows.
    padded = np.zeros((1 << levels) * _CHUNK, dtype=np.uint8)
    padded[padded.size - data.size:] = data
    chunks = padded.reshape(-1, _CHUNK)
    registers = np.bitwise_xor.reduce(_POSITION[np.arange(_CHUNK), chunks], axis=1)
    for level in range(levels):
        pairs = registers.reshape(-1, 2)
        registers = _apply_shift(_shift_table(level), pairs[:, 0]) ^ pairs[:, 1]
    return int(registers[0])


def crc32c(data: Union[bytes, bytearray, memoryview, np.ndarray]) -> int:
    """CRC32C (Castagnoli) of ``data``, as used by TFRecord; ``crc32c(b"123456789") == 0xE3069283``."""
    if isinstance(data, np.ndarray):
        buffer = np.ascontiguousarray(data).view(np.uint8).ravel()
    else:
        buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size < 1024:
        return _crc_register_bytewise(buffer.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    # For a reflected CRC, starting the register at s equals starting at 0 with the first four
    # message bytes xored by s (little-endian), so the init value costs one small copy.
    head = buffer[:4] ^ np.uint8(0xFF)
    return _crc_register_vectorised(np.concatenate([head, buffer[4:]])) ^ 0xFFFFFFFF


def masked_crc32c(data: Union[bytes, bytearray, memoryview, np.ndarray]) -> int:
    """The masked CRC32C stored in TFRecord files."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# TFRecord container


class TFRecordError(ValueError):
    """A TFRecord file is corrupt or truncated; the message names the file and the record."""


def _open(path: Path, compression: Optional[str], mode: str):
    if compression == "auto":
        with open(path, "rb") as handle:
            compression = "GZIP" if handle.read(2) == b"\x1f\x8b" else None
    if compression not in (None, "", "GZIP"):
        raise ValueError(f"unsupported TFRecord compression {compression!r} (None or 'GZIP')")
    return gzip.open(path, mode) if compression == "GZIP" else open(path, mode)


def read_records(path: Union[str, Path], compression: Optional[str] = "auto",
                 verify: bool = True) -> Iterator[bytes]:
    """Yield the records of a TFRecord file in order.

    Args:
        path: the file.
        compression: ``None``, ``"GZIP"`` or ``"auto"`` (GZIP when the file starts with the
            gzip magic bytes).
        verify: check both masked CRC32C checksums of every record.

    Raises:
        TFRecordError: truncated file, corrupt compression stream or checksum mismatch.
    """
    path = Path(path)
    index = offset = 0
    try:
        with _open(path, compression, "rb") as stream:
            while True:
                header = stream.read(12)
                if not header:
                    return
                where = f"{path}: record {index} at byte {offset} (uncompressed)"
                if len(header) < 12:
                    raise TFRecordError(f"{where}: file ends inside a record header")
                length, length_crc = struct.unpack("<QI", header)
                if verify and masked_crc32c(header[:8]) != length_crc:
                    raise TFRecordError(f"{where}: length checksum mismatch (corrupt file?)")
                body = stream.read(length + 4)
                if len(body) < length + 4:
                    raise TFRecordError(f"{where}: file ends inside a record of {length} bytes")
                data = body[:length]
                if verify and masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
                    raise TFRecordError(f"{where}: data checksum mismatch (corrupt file?)")
                yield data
                index, offset = index + 1, offset + 16 + length
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise TFRecordError(f"{path}: corrupt or truncated GZIP stream after {index} records "
                            f"({error})") from error


def write_records(path: Union[str, Path], records: Iterable[bytes],
                  compression: Optional[str] = None) -> None:
    """Write ``records`` as a TFRecord file (``compression``: ``None`` or ``"GZIP"``)."""
    with _open(Path(path), compression, "wb") as stream:
        for data in records:
            length = struct.pack("<Q", len(data))
            stream.write(length + struct.pack("<I", masked_crc32c(length)))
            stream.write(data)
            stream.write(struct.pack("<I", masked_crc32c(data)))


# ---------------------------------------------------------------------------------------------
# tf.train.Example, decoded and encoded by hand (protobuf wire format)


class ExampleError(ValueError):
    """A record is not a well-formed ``tf.train.Example``."""


class FloatList:
    """A ``float_list`` feature; ``values`` is a float32 array."""

    def __init__(self, values) -> None:
        self.values = np.asarray(values, dtype=np.float32).ravel()

    def __len__(self) -> int:
        return self.values.size


class Int64List:
    """An ``int64_list`` feature; ``values`` is an int64 array."""

    def __init__(self, values) -> None:
        self.values = np.asarray(values, dtype=np.int64).ravel()

    def __len__(self) -> int:
        return self.values.size


class BytesList:
    """A ``bytes_list`` feature, stored compactly as one buffer plus item boundaries.

    Args:
        values: the byte strings.
    """

    def __init__(self, values: Iterable[bytes] = ()) -> None:
        items = [bytes(v) for v in values]
        self._data = b"".join(items)
        self._offsets = np.cumsum([0] + [len(v) for v in items], dtype=np.int64)

    @classmethod
    def _uniform(cls, data: bytes, count: int) -> "BytesList":
        out = cls.__new__(cls)
        out._data = data
        out._offsets = np.arange(count + 1, dtype=np.int64) * (len(data) // max(count, 1))
        return out

    @classmethod
    def from_uint8(cls, array: np.ndarray) -> "BytesList":
        """One 1-byte string per element of ``array`` (C order): DeepMind's image/mask layout."""
        flat = np.ascontiguousarray(array, dtype=np.uint8).ravel()
        return cls._uniform(flat.tobytes(), flat.size)

    def __len__(self) -> int:
        return self._offsets.size - 1

    def __getitem__(self, index: int) -> bytes:
        return self._data[self._offsets[index]:self._offsets[index + 1]]

    def tolist(self) -> List[bytes]:
        return [self[i] for i in range(len(self))]

    def item_size(self) -> Optional[int]:
        """The common length of all items, or ``None`` when lengths differ."""
        sizes = np.diff(self._offsets)
        if sizes.size == 0:
            return 0
        return int(sizes[0]) if (sizes == sizes[0]).all() else None

    def to_uint8(self) -> np.ndarray:
        """``tf.io.decode_raw(..., tf.uint8)`` then squeeze: ``[N]`` for 1-byte items, else ``[N, L]``."""
        size = self.item_size()
        if size is None:
            raise ExampleError("decode_raw needs byte strings of one length; lengths differ")
        flat = np.frombuffer(self._data, dtype=np.uint8)
        return flat if size == 1 else flat.reshape(len(self), size)

    def _encode(self) -> bytes:
        size = self.item_size()
        if size is not None and 0 < size < 128 and len(self):  # the vectorised DeepMind fast path
            rows = np.empty((len(self), size + 2), dtype=np.uint8)
            rows[:, 0], rows[:, 1] = 0x0A, size
            rows[:, 2:] = np.frombuffer(self._data, dtype=np.uint8).reshape(len(self), size)
            return rows.tobytes()
        return b"".join(_length_delimited(1, item) for item in self.tolist())

    @classmethod
    def _decode(cls, payload: memoryview) -> "BytesList":
        raw = np.frombuffer(payload, dtype=np.uint8)
        if raw.size >= 2 and raw[0] == 0x0A and raw[1] < 128 and raw.size % (int(raw[1]) + 2) == 0:
            rows = raw.reshape(-1, int(raw[1]) + 2)
            if (rows[:, 0] == 0x0A).all() and (rows[:, 1] == raw[1]).all():
                return cls._uniform(rows[:, 2:].tobytes(), rows.shape[0])
        return cls(bytes(value) for field, wire, value in _fields(payload) if _is(field, wire, 1, 2))


Feature = Union[BytesList, FloatList, Int64List]


def parse_example(serialized: Union[bytes, memoryview]) -> Dict[str, Feature]:
    """Decode a serialized ``tf.train.Example`` into ``{name: BytesList | FloatList | Int64List}``."""
    features: Dict[str, Feature] = {}
    for field, wire, example_features in _fields(memoryview(serialized)):
        if not _is(field, wire, 1, 2):
            continue
        for entry_field, entry_wire, entry in _fields(example_features):
            if not _is(entry_field, entry_wire, 1, 2):
                continue
            key, feature = "", BytesList()  # an empty Feature decodes as an empty bytes_list
            for part, part_wire, value in _fields(entry):
                if _is(part, part_wire, 1, 2):
                    key = bytes(value).decode("utf-8")
                elif _is(part, part_wire, 2, 2):
                    feature = _decode_feature(value)
            features[key] = feature
    return features


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """Serialize ``{name: BytesList | FloatList | Int64List}`` as a ``tf.train.Example``."""
    entries = []
    for key, feature in features.items():
        if isinstance(feature, BytesList):
            kind, payload = 1, feature._encode()
        elif isinstance(feature, FloatList):  # packed, as proto3 writes repeated scalars
            kind, payload = 2, _length_delimited(1, feature.values.astype("<f4").tobytes())
        elif isinstance(feature, Int64List):
            varints = b"".join(_varint(int(v) & (2**64 - 1)) for v in feature.values)  # two's complement
            kind, payload = 3, _length_delimited(1, varints)
        else:
            raise TypeError(f"feature {key!r}: expected BytesList, FloatList or Int64List, "
                            f"got {type(feature)}")
        value = _length_delimited(kind, payload)
        entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, value)
        entries.append(_length_delimited(1, entry))
    return _length_delimited(1, b"".join(entries))


def _decode_feature(payload: memoryview) -> Feature:
    feature: Feature = BytesList()
    for kind, wire, value in _fields(payload):
        if _is(kind, wire, 1, 2):
            feature = BytesList._decode(value)
        elif _is(kind, wire, 2, 2):
            floats = [np.frombuffer(v, "<f4") for f, w, v in _fields(value) if f == 1 and w in (2, 5)]
            feature = FloatList(np.concatenate(floats) if floats else [])
        elif _is(kind, wire, 3, 2):
            ints: List[int] = []
            for f, w, v in _fields(value):
                if f == 1 and w == 2:
                    ints.extend(_varints(v))
                elif f == 1 and w == 0:
                    ints.append(v)
            feature = Int64List([i - 2**64 if i >= 2**63 else i for i in ints])
    return feature


def _is(field: int, wire: int, want_field: int, want_wire: int) -> bool:
    return field == want_field and wire == want_wire


def _read_varint(buffer: memoryview, pos: int):
    result = shift = 0
    while True:
        if pos >= len(buffer) or shift > 63:
            raise ExampleError("truncated or overlong varint")
        byte = buffer[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _varints(buffer: memoryview) -> Iterator[int]:
    pos = 0
    while pos < len(buffer):
        value, pos = _read_varint(buffer, pos)
        yield value


def _fields(buffer: memoryview):
    """Yield ``(field_number, wire_type, value)`` of a protobuf message (no groups)."""
    pos, end = 0, len(buffer)
    while pos < end:
        key, pos = _read_varint(buffer, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buffer, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buffer[pos:pos + size], pos + size
        elif wire == 2:
            length, pos = _read_varint(buffer, pos)
            value, pos = buffer[pos:pos + length], pos + length
        else:
            raise ExampleError(f"unsupported protobuf wire type {wire} (field {field})")
        if pos > end:
            raise ExampleError(f"field {field} runs past the end of its message")
        yield field, wire, value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload
