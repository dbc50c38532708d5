"""The seed's "Nested Workflows": inner_task is a child span of outer_workflow.

python examples/03_nested_workflows.py && flock traces show latest
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

data = Data(value=1)
sub_data = Data(value=2)


async def main():
    async with flock.traced_run("outer_workflow"):
        await flock.publish(data)

        # Nested workflow (creates child span)
        async with flock.traced_run("inner_task"):
            await flock.publish(sub_data)
            await flock.run_until_idle()

        await flock.run_until_idle()


asyncio.run(main())
