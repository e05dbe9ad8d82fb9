"""The stored key encoding keeps etcd's byte order and round-trips, NUL-heavy keys included."""

from hypothesis import given
from hypothesis import strategies as st

from raftkv.kv.keys import escape_key, escaped_size, unescape_key

# Keys rich in NUL runs of every length around the split point (127) exercise the encoding.
keys = st.lists(
    st.one_of(st.binary(max_size=3), st.integers(1, 300).map(lambda n: b"\0" * n)), max_size=4
).map(b"".join)


@given(keys)
def test_round_trip(key):
    assert unescape_key(escape_key(key)) == key


@given(keys)
def test_escaped_size_is_the_length_of_the_encoding(key):
    assert escaped_size(key) == len(escape_key(key))


@given(keys, keys, st.binary(max_size=17), st.binary(max_size=17))
def test_order_is_preserved_whatever_follows(a, b, x, y):
    if a < b:
        assert escape_key(a) + x < escape_key(b) + y
    elif a == b:
        assert escape_key(a) == escape_key(b)


def test_etcdctl_check_perf_keys_fit():
    # etcdctl check perf writes a short prefix then a mostly-NUL 256-byte key.
    key = b"/etcdctl-check-perf/" + b"\x01\x02" + b"\0" * 254
    assert len(escape_key(key)) + 16 < 511
