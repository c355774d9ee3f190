import asyncio
import time

from workers.timer import Waker


def test_many_waiters_each_wake_at_or_after_their_own_deadline():
    async def main() -> list[tuple[float, float]]:
        waker = Waker()
        base = time.monotonic() + 0.01
        deadlines = [base + 0.003 * i for i in (5, 1, 4, 2, 3, 0)]

        async def wait(d: float) -> tuple[float, float]:
            await waker.until(d)
            return d, time.monotonic()

        try:
            return await asyncio.wait_for(asyncio.gather(*(wait(d) for d in deadlines)), 5)
        finally:
            waker.close()

    results = asyncio.run(main())
    assert len(results) == 6
    assert all(woke >= deadline for deadline, woke in results)  # never early
