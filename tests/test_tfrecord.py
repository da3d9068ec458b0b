"""The TensorFlow-free TFRecord reader/writer and tf.train.Example codec (datamodules/tfrecord.py)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from datamodules import tfrecord
from datamodules.tfrecord import (BytesList, ExampleError, FloatList, Int64List, TFRecordError,
                                  crc32c, encode_example, masked_crc32c, parse_example,
                                  read_records, write_records)


def test_crc32c_matches_rfc3720_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


@pytest.mark.parametrize("size", [0, 3, 4, 1023, 1024, 1025, 256 * 7 + 5, 100_003])
def test_vectorised_crc32c_equals_bytewise(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    bytewise = tfrecord._crc_register_bytewise(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    assert crc32c(data) == bytewise


def test_masked_crc_formula():
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_records_round_trip(tmp_path, compression):
    records = [b"", b"x", bytes(range(256)) * 20]
    path = tmp_path / "data.tfrecords"
    write_records(path, records, compression=compression)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (compression == "GZIP")
    assert list(read_records(path)) == records  # "auto" detects the compression


def test_record_layout_is_length_crc_data_crc(tmp_path):
    path = tmp_path / "one.tfrecords"
    write_records(path, [b"hello"])
    raw = path.read_bytes()
    assert len(raw) == 8 + 4 + 5 + 4
    assert int.from_bytes(raw[:8], "little") == 5
    assert int.from_bytes(raw[8:12], "little") == masked_crc32c(raw[:8])
    assert raw[12:17] == b"hello"
    assert int.from_bytes(raw[17:], "little") == masked_crc32c(b"hello")


def test_corrupt_and_truncated_files_raise_clear_errors(tmp_path):
    path = tmp_path / "bad.tfrecords"
    write_records(path, [b"first record", b"second record"])
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0x01  # a byte inside the second record's data
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"record 1 .*data checksum"):
        list(read_records(path))
    assert len(list(read_records(path, verify=False))) == 2
    path.write_bytes(bytes(raw[:-3]))
    with pytest.raises(TFRecordError, match="ends inside a record"):
        list(read_records(path))
    gz = tmp_path / "bad.gz.tfrecords"
    write_records(gz, [b"a" * 1000], compression="GZIP")
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(TFRecordError, match="GZIP"):
        list(read_records(gz))


def test_example_round_trip_and_fast_path():
    image = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    features = {"image": BytesList.from_uint8(image), "names": BytesList([b"ab", b"", b"xyz"]),
                "x": FloatList([0.5, -1.25]), "n": Int64List([1, -5, 2**40])}
    decoded = parse_example(encode_example(features))
    np.testing.assert_array_equal(decoded["image"].to_uint8().reshape(5, 4, 3), image)
    assert decoded["names"].tolist() == [b"ab", b"", b"xyz"]
    assert decoded["names"].item_size() is None
    np.testing.assert_array_equal(decoded["x"].values, np.float32([0.5, -1.25]))
    np.testing.assert_array_equal(decoded["n"].values, [1, -5, 2**40])
    with pytest.raises(ExampleError, match="one length"):
        decoded["names"].to_uint8()
    # A bytes_list of 1-byte strings is exactly 0x0A 0x01 <byte> per element on the wire.
    wire = encode_example({"m": BytesList.from_uint8(np.array([7, 9], np.uint8))})
    assert wire.endswith(b"\x0a\x01\x07\x0a\x01\x09")


def test_truncated_example_raises():
    wire = encode_example({"x": FloatList([1.0, 2.0])})
    with pytest.raises(ExampleError):
        parse_example(wire[:-3])


def _protobuf_example_class():
    """``tf.train.Example`` built from its .proto definition with the protobuf runtime (an oracle)."""
    descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
    from google.protobuf import descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="oracle_example.proto", package="tensorflow",
                                               syntax="proto3")
    for name, kind in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                       ("Int64List", field.TYPE_INT64)):
        proto.message_type.add(name=name).field.add(name="value", number=1, type=kind,
                                                    label=field.LABEL_REPEATED)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), 1):
        feature.field.add(name=name, number=number, type=field.TYPE_MESSAGE, oneof_index=0,
                          label=field.LABEL_OPTIONAL,
                          type_name=f".tensorflow.{name.title().replace('_', '')}")
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                    type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                       type_name=".tensorflow.Features.FeatureEntry")
    proto.message_type.add(name="Example").field.add(
        name="features", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
        type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def test_codec_agrees_with_the_protobuf_runtime():
    example_class = _protobuf_example_class()
    reference = example_class()
    pixels = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)
    reference.features.feature["image"].bytes_list.value.extend([bytes([p]) for p in pixels])
    reference.features.feature["visibility"].float_list.value.extend([1.0, 0.0, 0.5])
    reference.features.feature["ids"].int64_list.value.extend([3, -2, 2**50])
    decoded = parse_example(reference.SerializeToString())
    np.testing.assert_array_equal(decoded["image"].to_uint8(), pixels)
    np.testing.assert_array_equal(decoded["visibility"].values, [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(decoded["ids"].values, [3, -2, 2**50])
    ours = encode_example({"image": BytesList.from_uint8(pixels), "visibility": FloatList([1, 0, 0.5]),
                           "ids": Int64List([3, -2, 2**50])})
    assert example_class.FromString(ours) == reference


def test_gzip_stream_is_standard(tmp_path):
    path = tmp_path / "g.tfrecords"
    write_records(path, [b"payload"], compression="GZIP")
    assert gzip.decompress(path.read_bytes())[12:19] == b"payload"
