"""KlineStream against the local exchange: a cancelled reader always stops, whenever the cancellation lands."""

import asyncio
import random

from marketpipe.infrastructure.data.binance_stream import KlineStream
from marketpipe.infrastructure.data.local_exchange import LocalExchange


def test_cancelling_the_reader_always_ends_it() -> None:
    """A cancellation racing with an arriving message must not be swallowed (``asyncio.wait_for`` on 3.11 could:
    the reader then read on forever and a stopped ``stream`` never exited)."""
    with LocalExchange(["BTCUSDT", "ETHUSDT"], speed=600, update_interval=0.2) as exchange:

        async def read(stream: KlineStream) -> None:
            async for _ in stream.updates():
                pass

        async def main() -> int:
            rng = random.Random(7)
            stream = KlineStream(exchange.ws_url, [("BTCUSDT", "1s"), ("ETHUSDT", "1s")], backoff=0.01)
            for _ in range(60):
                reader = asyncio.create_task(read(stream))
                await asyncio.sleep(rng.uniform(0.0, 0.03))
                reader.cancel()
                async with asyncio.timeout(5):  # a swallowed cancellation would read on: TimeoutError here
                    await asyncio.gather(reader, return_exceptions=True)
                assert reader.cancelled()
            return stream.connects

        assert asyncio.run(main()) > 30
