"""The seed's "Basic Usage": one workflow trace for publish + run_until_idle.

The seed leaves `Output` undefined; it is declared here. The agent uses the default DSPy
engine on openai/gpt-4o: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local
OpenAI-compatible server; without either it exits at once with a one-line message.

    OPENAI_API_KEY=... python examples/01_basic_usage.py && flock traces show latest
"""

import asyncio
import os
import sys

from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type


@flock_type
class Input(BaseModel):
    data: str


@flock_type
class Output(BaseModel):
    result: str


if not any(os.environ.get(v) for v in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")):
    sys.exit(
        "01_basic_usage.py needs an OpenAI key: set OPENAI_API_KEY (or OPENAI_BASE_URL for a "
        "local OpenAI-compatible server)"
    )

flock = Flock("openai/gpt-4o")

agent = flock.agent("processor").consumes(Input).publishes(Output)


async def main():
    # Wrap entire workflow in unified trace
    async with flock.traced_run("data_processing"):
        input_data = Input(data="process this")
        await flock.publish(input_data)
        await flock.run_until_idle()

    print("✅ Processing complete!")


asyncio.run(main())
