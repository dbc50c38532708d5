"""What publish() and agent outputs check: an instance's values against its fields' types and
constraints, without running the model's own validators a second time (which changed valid
data, or refused it), and the same check for the dict form and for agent outputs."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Self

import pytest
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    RootModel,
    field_validator,
    model_validator,
)

from flock import Flock, flock_type
from flock.exceptions import AgentFailures, PayloadValidationError
from flock.store.memory import MemoryStore
from tests.models import Idea

RUNS: list[str] = []


@flock_type(name="validation.User")
class User(BaseModel):
    name: str
    password: str

    @field_validator("password")
    @classmethod
    def hash_it(cls, value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()[:16]


@flock_type(name="validation.Price")
class Price(BaseModel):
    cents: int

    @field_validator("cents", mode="before")
    @classmethod
    def dollars_to_cents(cls, value: Any) -> int:
        return round(float(value) * 100)


@flock_type(name="validation.Person")
class Person(BaseModel):
    first: str
    last: str

    @model_validator(mode="before")
    @classmethod
    def split(cls, data: Any) -> Any:
        first, last = data["full_name"].split(" ", 1)  # only the raw input has full_name
        return {"first": first, "last": last}


def _shout(value: str) -> str:
    RUNS.append(value)
    return value + "!"


@flock_type(name="validation.Note")
class Note(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    text: Annotated[str, AfterValidator(_shout)]
    stars: int = Field(alias="starCount", ge=0, default=0)
    _seen_by: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def counted(self) -> Note:
        RUNS.append("model")
        return self


@flock_type(name="validation.Count")
class Count(BaseModel):
    n: int


async def test_publish_runs_no_validator_twice_and_stores_the_values_as_given() -> None:
    flock = Flock()
    user = User(name="ann", password="hunter2")
    price = Price(cents="1.50")
    person = Person.model_validate({"full_name": "Ada Lovelace"})  # refused before: KeyError
    stored = [a.payload for a in await flock.publish_many([user, price, person])]
    assert stored == [user, price, person]
    assert stored[1].cents == 150  # not 15,000
    note = Note(text="hi", starCount=3, mood="fine")
    note._seen_by = "eve"
    RUNS.clear()
    (artifact,) = await flock.publish([note])
    assert RUNS == []  # neither the field's nor the model's validator ran again
    assert artifact.payload == note and artifact.payload is not note
    assert artifact.payload.text == "hi!" and artifact.payload.stars == 3
    assert artifact.payload.model_extra == {"mood": "fine"}
    assert artifact.payload._seen_by == "eve"
    assert artifact.payload.model_fields_set == note.model_fields_set


@pytest.mark.parametrize(
    "bad",
    [
        Count.model_construct(n="many"),  # type: ignore[arg-type]
        Note.model_construct(text="hi", stars=-1),  # its constraint still holds
    ],
)
async def test_an_instance_whose_values_do_not_fit_its_fields_is_refused(bad: BaseModel) -> None:
    flock = Flock()
    with pytest.raises(PayloadValidationError, match="nothing was stored"):
        await flock.publish(bad)
    assert await flock.store.query() == []


async def test_the_dict_form_checks_a_model_payload_like_an_instance() -> None:
    flock = Flock()
    with pytest.raises(PayloadValidationError, match="nothing was stored"):
        await flock.publish({"type": "validation.Count", "payload": Count.model_construct(n="x")})

    class Sub(Idea):
        extra_field: int = 1

    with pytest.raises(PayloadValidationError, match="is a Sub instance; pass an instance of Idea"):
        await flock.publish({"type": "Idea", "payload": Sub(topic="t")})
    price = Price(cents=2)
    artifact = await flock.publish({"type": "validation.Price", "payload": price})
    assert artifact.payload.cents == 200  # the validator ran once, when price was built
    assert len(await flock.store.query()) == 1


async def test_an_agent_output_changed_into_an_invalid_value_fails_its_run() -> None:
    flock = Flock(store=MemoryStore())

    def count(idea: Idea) -> Count:
        result = Count(n=0)
        result.n = idea.topic  # type: ignore[assignment]  # no validate_assignment
        return result

    flock.agent("counter").consumes(Idea).publishes(Count).with_engines(count)
    await flock.publish(Idea(topic="not a number"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, PayloadValidationError)
    assert "returned an invalid Count" in str(failure)
    assert await flock.store.query(type="validation.Count") == []


async def test_agent_outputs_are_stored_with_their_validated_values_unchanged() -> None:
    flock = Flock()

    def make_user(idea: Idea) -> User:
        return User(name=idea.topic, password="secret")

    flock.agent("signup").consumes(Idea).publishes(User).with_engines(make_user)
    await flock.publish(Idea(topic="bob"))
    await flock.run_until_idle()
    (user,) = await flock.store.query(type="validation.User")
    assert user.payload.password == User(name="x", password="secret").password


class ObjectId:
    """A type only a PlainValidator gives a schema (as bson's ObjectId is usually wrapped)."""

    def __init__(self, value: object) -> None:
        self.value = str(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectId) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


@flock_type(name="validation.Login")
class Login(BaseModel):
    password: (
        Annotated[str, AfterValidator(lambda v: hashlib.sha256(v.encode()).hexdigest())] | None
    )


@flock_type(name="validation.Doc")
class Doc(BaseModel):
    id: Annotated[ObjectId, PlainValidator(ObjectId), PlainSerializer(lambda o: o.value)]


@flock_type(name="validation.Tree")
class Tree(BaseModel):
    name: str
    children: list[Self] = []


@flock_type(name="validation.StrictCount")
class StrictCount(BaseModel):
    model_config = ConfigDict(strict=True)
    n: int


async def test_models_the_check_cannot_mirror_are_stored_unchanged() -> None:
    # A validator nested in the type (it runs in the check too: its output is not kept), a
    # type only a PlainValidator defines (no check model can be built), typing.Self (it
    # would name the check model): each stored as built, none refused.
    flock = Flock()
    login = Login(password="hunter2")
    doc = Doc(id="65f0")  # type: ignore[arg-type]
    tree = Tree(name="a", children=[Tree(name="b")])
    stored = [a.payload for a in await flock.publish_many([login, doc, tree])]
    assert stored == [login, doc, tree]


async def test_a_strict_model_changed_into_a_lax_value_is_refused() -> None:
    count = StrictCount(n=1)
    count.n = "5"  # type: ignore[assignment]
    with pytest.raises(PayloadValidationError, match="valid integer"):
        await Flock().publish(count)


@flock_type(name="validation.Scores")
class Scores(RootModel[list[int]]):
    pass


async def test_a_root_model_is_stored_as_an_equal_copy() -> None:
    scores = Scores([1, 2])
    (artifact,) = await Flock().publish([scores])
    assert artifact.payload == scores and artifact.payload is not scores
    assert artifact.payload.__dict__ == {"root": [1, 2]}
