"""The seed's "Custom Workflow Names" and "Custom Attributes": three workflow traces.

python examples/02_names_and_attributes.py && flock traces list
"""

import asyncio

from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type


@flock_type
class NewUser(BaseModel):
    email: str


@flock_type
class Welcome(BaseModel):
    message: str


@flock_type
class BatchData(BaseModel):
    rows: int


@flock_type
class TrainingData(BaseModel):
    examples: int


@flock_type
class Model(BaseModel):
    accuracy: float


flock = Flock()
flock.agent("greeter").consumes(NewUser).publishes(Welcome).with_engines(
    lambda user: Welcome(message=f"Welcome, {user.email}!")
)
flock.agent("batcher").consumes(BatchData).with_engines(lambda batch: None)
flock.agent("trainer").consumes(TrainingData).publishes(Model).with_engines(
    lambda data: Model(accuracy=0.93)
)

new_user = NewUser(email="ada@example.com")
batch_data = BatchData(rows=500)
training_data = TrainingData(examples=10000)


async def main():
    # Use descriptive names for different workflows
    async with flock.traced_run("customer_onboarding"):
        await flock.publish(new_user)
        await flock.run_until_idle()

    async with flock.traced_run("daily_batch_job"):
        await flock.publish(batch_data)
        await flock.run_until_idle()

    async with flock.traced_run("ml_pipeline") as span:
        # Add custom attributes to the workflow span
        span.set_attribute("pipeline.version", "2.0")
        span.set_attribute("dataset.size", 10000)

        await flock.publish(training_data)
        await flock.run_until_idle()


asyncio.run(main())
