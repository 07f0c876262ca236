"""The asyncio helpers the runner relies on to stop when told."""

import asyncio

import pytest

from livedata_core.aio_tools import reraise_if_cancelling, within


def test_a_cancellation_that_arrives_as_the_awaited_thing_finishes_is_not_lost():
    """On Python 3.11 asyncio.wait_for returns the result here and the task carries on; within() must not."""

    async def main():
        fut = asyncio.get_running_loop().create_future()
        carried_on = []

        async def subscriber():
            await within(fut, 10)
            carried_on.append(True)  # a stopped runner must never get here
            await asyncio.sleep(3600)

        task = asyncio.create_task(subscriber())
        await asyncio.sleep(0)
        fut.set_result("subscribed")  # the answer arrives...
        task.cancel()  # ...in the same loop iteration as the stop
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
        return carried_on

    assert asyncio.run(main()) == []


def test_within_times_out_and_reraise_if_cancelling_only_when_cancelling():
    async def main():
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(1), 0.01)
        reraise_if_cancelling()  # not being cancelled: nothing happens

        async def swallowing_loop():
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    # a library that turns cancellation into an ordinary error, caught by a resilient loop
                    try:
                        raise ConnectionError("cancelled") from None
                    except Exception:
                        reraise_if_cancelling()

        task = asyncio.create_task(swallowing_loop())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)

    asyncio.run(main())
