"""``--shard i/n``: run the i-th of n interleaved parts of the selected tests, so that CI can
spread the slow tier over both cores (.ci/run)."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="I/N",
                     help="run only the I-th (1-based) of N interleaved parts of the selected tests")


@pytest.hookimpl(trylast=True)  # after `-m` has deselected: the parts share what is selected
def pytest_collection_modifyitems(config, items):
    shard = config.getoption("--shard")
    if not shard:
        return
    try:
        index, count = (int(part) for part in shard.split("/"))
        if not 1 <= index <= count:
            raise ValueError
    except ValueError:
        raise pytest.UsageError(f"--shard {shard}: expected I/N with 1 <= I <= N, e.g. 1/2")
    kept = [item for position, item in enumerate(items) if position % count == index - 1]
    chosen = set(map(id, kept))
    config.hook.pytest_deselected(items=[item for item in items if id(item) not in chosen])
    items[:] = kept
