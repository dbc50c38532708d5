"""The seed's "Handle Errors Gracefully": a failing agent is recorded on the trace (ERROR
status and an exception event) and reported to the caller.

    python examples/05_handle_errors.py && flock traces list --errors
"""

import asyncio

from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type


@flock_type
class Data(BaseModel):
    value: int


def risky(data: Data) -> None:
    raise RuntimeError(f"cannot process {data.value}")


flock = Flock()
flock.agent("risky_agent").consumes(Data).with_engines(risky)
data = Data(value=7)


async def main():
    try:
        async with flock.traced_run("risky_operation"):
            await flock.publish(data)
            await flock.run_until_idle()
    except Exception as e:
        # Exception is automatically recorded in the trace
        print(f"Workflow failed: {e}")


asyncio.run(main())
