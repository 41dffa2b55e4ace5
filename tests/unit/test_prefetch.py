"""The updates consumer's prefetch is bounded in bytes: RabbitMQ counts messages only."""

from __future__ import annotations

from coordinator.receiving import PREFETCH_BYTES, update_prefetch

MB = 1_000_000


def test_the_prefetch_follows_the_update_size() -> None:
    # Given updates of 20 KB, 4 MB, 40 MB and 400 MB
    # Then small ones keep 16 in flight, a 40 MB model 6 (240 MB, not 640), and never fewer
    # than 2, so one is on its way while another is handled
    assert [update_prefetch(size) for size in (20_000, 4 * MB, 40 * MB, 400 * MB)] == \
        [16, 16, 6, 2]
    assert all(update_prefetch(size) * size <= PREFETCH_BYTES
               for size in (20_000, 4 * MB, 40 * MB, 100 * MB))
