"""``avid.memory.give_back``: freed heap goes back to the system between stages."""

import pytest

from avid.memory import _malloc_trim, give_back


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(_malloc_trim() is None, reason="not glibc: only the collection runs")
def test_freed_heap_that_free_alone_keeps_is_returned():
    blocks = [bytes(2048) + bytes([i % 256]) for i in range(60_000)]  # ~120 MB in malloc'd pieces
    keep = blocks[::100]  # one survivor per ~200 kB: free() alone cannot shrink the heap past them
    del blocks
    before = _rss_bytes()
    give_back()
    after = _rss_bytes()
    assert before - after > 60 * 2**20, (before, after)
    assert len(keep) == 600
