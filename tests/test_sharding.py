"""``--shard i/n`` (tests/conftest.py): the parts CI runs side by side are the whole selection,
each test in exactly one part."""

from objdecomp.paths import REPO_ROOT

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.parametrize("n", range(7))
def test_numbers(n):
    pass

@pytest.mark.slow
def test_slow():
    pass
"""


def collected(pytester, *args):
    result = pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider", *args)
    return result.ret, [line for line in result.outlines if "::" in line]


def test_the_shards_partition_the_selected_tests(pytester):
    pytester.makeconftest((REPO_ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow")
    pytester.makepyfile(TESTS)
    _, everything = collected(pytester, "-m", "not slow")
    _, first = collected(pytester, "-m", "not slow", "--shard", "1/2")
    _, second = collected(pytester, "-m", "not slow", "--shard", "2/2")
    assert len(everything) == 7, "the marker selection comes first"
    assert sorted(first + second) == sorted(everything) and not set(first) & set(second)
    assert (len(first), len(second)) == (4, 3)


def test_a_malformed_shard_is_a_usage_error(pytester):
    pytester.makeconftest((REPO_ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(TESTS)
    status, _ = collected(pytester, "--shard", "3/2")
    assert status == 4  # pytest's usage error
