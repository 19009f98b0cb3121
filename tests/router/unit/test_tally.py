"""Exposures and Predict samples written in batches, over in-memory measurements: order, retry
after a failed write, the bound on what is kept, and flushing at close. No I/O."""

from __future__ import annotations

import asyncio

import pytest

from ml_serving_server.services.router.domain.model import Exposure, RequestSample
from ml_serving_server.services.router.domain.ports import StoreUnavailable
from ml_serving_server.services.router.domain.tally import Tally

from .fakes import MemoryMeasurements


def exposure(i: int) -> Exposure:
    return Exposure("exp", "control", f"u{i}")


def sample(i: int) -> RequestSample:
    return RequestSample("experiment:exp", "control", float(i), False)


@pytest.fixture
def measurements():
    return MemoryMeasurements()


@pytest.fixture
async def tally(measurements):
    tally = Tally(measurements, interval_s=3600)  # flushed by the tests, not by time
    yield tally
    await tally.close()


async def eventually(check, timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the tally")
        await asyncio.sleep(0.002)


async def test_batches_are_written_in_order(tally, measurements):
    tally.expose(exposure(1))
    tally.expose(exposure(2))
    tally.sample(sample(1))
    assert measurements.exposure_batches == []  # the request path only appends
    await tally.flush()
    tally.expose(exposure(3))
    await tally.flush()
    await tally.flush()  # nothing pending: no round trip
    assert measurements.exposure_batches == [[exposure(1), exposure(2)], [exposure(3)]]
    assert measurements.request_batches == [[sample(1)]]


async def test_a_failed_write_keeps_the_batch_for_the_next_flush(tally, measurements):
    tally.expose(exposure(1))
    tally.expose(exposure(2))
    measurements.fail_writes = 1
    with pytest.raises(StoreUnavailable):
        await tally.flush()
    tally.expose(exposure(3))
    await tally.flush()
    await tally.flush()
    assert measurements.exposure_batches == [[exposure(1), exposure(2), exposure(3)]]  # once, in order


async def test_failed_exposures_hold_back_samples_without_losing_them(tally, measurements):
    tally.expose(exposure(1))
    tally.sample(sample(1))
    measurements.fail_writes = 1  # the exposures' write fails; samples wait their turn
    with pytest.raises(StoreUnavailable):
        await tally.flush()
    assert measurements.request_batches == []
    await tally.flush()
    assert measurements.exposure_batches == [[exposure(1)]] and measurements.request_batches == [[sample(1)]]


async def test_items_added_during_a_failing_write_go_after_it(tally, measurements):
    tally.expose(exposure(1))
    gate = measurements.write_gate = asyncio.Event()
    flushing = asyncio.ensure_future(tally.flush())
    for _ in range(3):
        await asyncio.sleep(0)  # the write is under way, waiting for the store
    tally.expose(exposure(2))
    measurements.fail_writes = 1
    gate.set()
    with pytest.raises(StoreUnavailable):
        await flushing
    measurements.write_gate = None
    await tally.flush()
    assert measurements.exposure_batches == [[exposure(1), exposure(2)]]


async def test_flush_exposures_leaves_the_samples(tally, measurements):
    tally.expose(exposure(1))
    tally.sample(sample(1))
    await tally.flush_exposures()
    assert measurements.exposure_batches == [[exposure(1)]] and measurements.request_batches == []


async def test_the_bound_drops_the_oldest_and_counts_them(measurements):
    tally = Tally(measurements, interval_s=3600, max_pending=3)
    try:
        for i in range(5):
            tally.expose(exposure(i))
        for i in range(4):
            tally.sample(sample(i))
        assert tally.dropped == 2 + 1
        measurements.fail_writes = 1  # kept across a failure, still bounded afterwards
        with pytest.raises(StoreUnavailable):
            await tally.flush()
        tally.expose(exposure(5))
        assert tally.dropped == 4
        await tally.flush()
        assert measurements.exposure_batches == [[exposure(3), exposure(4), exposure(5)]]
        assert measurements.request_batches == [[sample(1), sample(2), sample(3)]]
    finally:
        await tally.close()


async def test_the_background_task_flushes_and_retries(measurements, caplog):
    tally = Tally(measurements, interval_s=0.005)
    try:
        measurements.fail_writes = 2
        tally.expose(exposure(1))
        await eventually(lambda: measurements.exposure_batches != [])
        assert measurements.exposure_batches == [[exposure(1)]]
        assert "will retry" in caplog.text
        tally.sample(sample(1))
        await eventually(lambda: measurements.request_batches != [])
    finally:
        await tally.close()
    assert measurements.exposure_batches == [[exposure(1)]]


async def test_close_flushes_what_is_left(measurements):
    tally = Tally(measurements, interval_s=3600)
    tally.expose(exposure(1))
    tally.sample(sample(1))
    await tally.close()
    assert measurements.exposure_batches == [[exposure(1)]] and measurements.request_batches == [[sample(1)]]
    await tally.close()  # twice is fine


async def test_close_with_the_store_down_logs_what_is_lost(measurements, caplog):
    tally = Tally(measurements, interval_s=3600)
    tally.expose(exposure(1))
    tally.expose(exposure(2))
    tally.sample(sample(1))
    measurements.down = True
    await tally.close()  # never raises
    assert "lost at shutdown: 2 exposures, 1 samples" in caplog.text
