"""PeriodicTask: a failed or stuck round never ends the loop, and closing never hangs."""

from __future__ import annotations

import asyncio

from ml_serving_server.runtime.periodic import PeriodicTask


async def test_a_failing_round_does_not_end_the_loop():
    rounds = []

    async def step():
        rounds.append(1)
        raise RuntimeError("dependency down")

    task = PeriodicTask("failing", step, interval_s=0.01)
    task.start()
    await asyncio.sleep(0.1)
    await task.close()
    assert len(rounds) >= 3


async def test_a_stuck_round_is_cancelled_after_its_timeout_and_the_next_one_runs():
    started = []

    async def step():
        started.append(1)
        await asyncio.Event().wait()  # never answers

    task = PeriodicTask("stuck", step, interval_s=0.01, round_timeout_s=0.05)
    task.start()
    await asyncio.sleep(0.3)
    await task.close()
    assert len(started) >= 2


async def test_close_gives_up_on_a_round_that_swallows_its_cancellation():
    released = asyncio.Event()

    async def step():
        while not released.is_set():  # refuses to be cancelled, as a wait_for racing its inner future can
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue
        raise asyncio.CancelledError

    task = PeriodicTask("stubborn", step, interval_s=0.01, close_timeout_s=0.3)
    task.start()
    await asyncio.sleep(0.05)
    stubborn = next(t for t in asyncio.all_tasks() if t.get_name() == "stubborn")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await task.close()
    assert 0.25 < loop.time() - began < 1.0  # waited its close timeout, then gave up
    assert not stubborn.done()
    released.set()  # the test's own cleanup: let the left-behind round end
    stubborn.cancel()
    await asyncio.wait({stubborn}, timeout=1.0)
    assert stubborn.done()
