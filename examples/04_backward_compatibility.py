"""The seed's "Backward Compatibility": without traced_run, publish and run_until_idle are two
separate root traces; with it, one.

    python examples/04_backward_compatibility.py && flock traces list
"""

import asyncio

from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type


@flock_type
class Data(BaseModel):
    value: int


@flock_type
class Result(BaseModel):
    value: int


flock = Flock()
flock.agent("doubler").consumes(Data).publishes(Result).with_engines(
    lambda d: Result(value=d.value * 2)
)
data = Data(value=21)


async def main():
    # Without traced_run() - old behavior (separate traces)
    await flock.publish(data)
    await flock.run_until_idle()

    # With traced_run() - new behavior (unified trace)
    async with flock.traced_run("workflow"):
        await flock.publish(data)
        await flock.run_until_idle()


asyncio.run(main())
