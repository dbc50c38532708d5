"""Artifact visibility: the values (kinds, JSON), publishing with a visibility, agents'
output defaults and identities (labels, tenant), and enforcement in scheduling, fan-in and
DSPyEngine's conversation context. (PostgreSQL: tests/store/test_postgres_visibility.py.)"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from flock import (
    ConfigurationError,
    Flock,
    LabelledVisibility,
    PrivateVisibility,
    PublicVisibility,
    TenantVisibility,
    Visibility,
    flock_type,
    only_for,
)
from flock.agent import AgentBuilder
from flock.artifacts import Artifact
from flock.dashboard._schemas import ArtifactOut
from flock.engines.dspy import DSPyEngine
from flock.fake_llm import FakeOpenAIServer
from flock.registry import registry
from flock.store.memory import MemoryStore
from flock.testing import SpanCapture
from flock.visibility import PUBLIC, visible_artifacts
from tests.models import Idea, Note, Pizza, Review


@flock_type
class Memo(BaseModel):
    text: str


@flock_type
class Ack(BaseModel):
    by: str
    text: str = ""


@flock_type
class Invoice(BaseModel):
    amount: int


@flock_type
class Order(BaseModel):
    id: str


@flock_type
class Payment(BaseModel):
    order_id: str


MEMO = registry.name_of(Memo)
ACK = registry.name_of(Ack)
NOTE = registry.name_of(Note)


class Who:
    """An identity without a Flock."""

    def __init__(
        self, name: str, labels: frozenset[str] = frozenset(), tenant_id: str | None = None
    ) -> None:
        self.name, self.labels, self.tenant_id = name, labels, tenant_id


def ackers(flock: Flock, *names: str) -> None:
    """Agents that consume Memo and answer with an Ack naming themselves."""
    for name in names:
        flock.agent(name).consumes(Memo).publishes(Ack).with_engines(
            lambda m, n=name: Ack(by=n, text=m.text)
        ).without_output()


async def acked_by(flock: Flock) -> list[str]:
    return sorted(f"{a.by}:{a.text}" for a in await flock.store.payloads(Ack))


# The values -------------------------------------------------------------------------------


def test_each_kind_allows_whom_it_should() -> None:
    alice, bob = Who("alice"), Who("bob", frozenset({"hr", "eu"}), tenant_id="acme")
    assert PublicVisibility().allows(alice) and PublicVisibility().allows(bob)
    private = PrivateVisibility(agents={"alice"})
    assert private.allows(alice) and not private.allows(bob)
    labelled = LabelledVisibility(required_labels={"hr", "eu"})
    assert labelled.allows(bob) and not labelled.allows(alice)
    assert not LabelledVisibility(required_labels={"hr", "us"}).allows(bob)  # every label
    tenant = TenantVisibility(tenant_id="acme")
    assert tenant.allows(bob) and not tenant.allows(alice)  # no tenant: not acme's
    assert not TenantVisibility(tenant_id="globex").allows(bob)
    unresolved = TenantVisibility()  # "the publisher's tenant", never filled in
    assert not unresolved.allows(alice) and not unresolved.allows(Who("x", tenant_id=None))


def test_values_are_immutable_hashable_and_compare_by_value() -> None:
    private = PrivateVisibility(agents=["b", "a", "a"])
    assert private.agents == frozenset({"a", "b"})
    assert private == only_for("a", "b") and hash(private) == hash(only_for("b", "a"))
    assert private != LabelledVisibility(required_labels={"a", "b"})
    assert PublicVisibility() == PUBLIC and {PublicVisibility(), PUBLIC} == {PUBLIC}
    with pytest.raises(dataclasses.FrozenInstanceError):
        private.agents = frozenset({"c"})  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TenantVisibility(tenant_id="t").tenant_id = "u"  # type: ignore[misc]
    assert repr(only_for("b", "a")) == "PrivateVisibility(agents={'a', 'b'})"
    assert repr(TenantVisibility(tenant_id="t")) == "TenantVisibility(tenant_id='t')"


KINDS: list[tuple[Visibility, dict[str, Any]]] = [
    (PublicVisibility(), {"kind": "Public"}),
    (PrivateVisibility(agents={"b", "a"}), {"kind": "Private", "agents": ["a", "b"]}),
    (
        LabelledVisibility(required_labels={"x", "clearance:secret"}),
        {"kind": "Labelled", "required_labels": ["clearance:secret", "x"]},
    ),
    (TenantVisibility(tenant_id="acme"), {"kind": "Tenant", "tenant_id": "acme"}),
    (TenantVisibility(), {"kind": "Tenant", "tenant_id": None}),
]


@pytest.mark.parametrize(("value", "form"), KINDS, ids=lambda v: getattr(v, "kind", ""))
def test_json_form_is_stable_and_round_trips_exactly(
    value: Visibility, form: dict[str, Any]
) -> None:
    assert value.to_json() == form
    assert value.kind == form["kind"]
    text = json.dumps(value.to_json())
    for data in (form, text, text.encode()):
        back = Visibility.from_json(data)
        assert back == value and type(back) is type(value)
    assert type(value).from_json(form) == value


def test_public_from_json_is_the_shared_default() -> None:
    assert Visibility.from_json({"kind": "Public"}) is PUBLIC


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "After", "ttl": 60}, "unknown visibility kind 'After'"),
        ({"agents": ["a"]}, "an object with a 'kind'"),
        ('["Private"]', "an object with a 'kind'"),
        ("{not json", "not JSON"),
        ({"kind": "Private", "agents": ["a"], "extra": 1}, "unexpected keys"),
        ({"kind": "Private", "agents": []}, "stored Private visibility is invalid"),
        ({"kind": "Labelled"}, "stored Labelled visibility is invalid"),
        ({"kind": "Tenant", "tenant_id": 7}, "stored Tenant visibility is invalid"),
    ],
)
def test_stored_data_that_is_not_a_known_visibility_is_refused(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Visibility.from_json(data)


def test_from_json_on_a_subclass_wants_that_kind() -> None:
    with pytest.raises(ValueError, match="is not a PrivateVisibility"):
        PrivateVisibility.from_json({"kind": "Public"})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PrivateVisibility(agents="alice"), r"not a single string: write \{'alice'\}"),
        (lambda: PrivateVisibility(agents=set()), "at least one name"),
        (lambda: PrivateVisibility(agents={"a", 3}), "non-blank string without NUL, got 3"),
        (lambda: PrivateVisibility(agents={" "}), "non-blank string without NUL"),
        (lambda: PrivateVisibility(agents=[["a"]]), "must be a string"),
        (lambda: PrivateVisibility(agents=5), "collection of names"),
        (lambda: LabelledVisibility(required_labels=[]), "use PublicVisibility"),
        (lambda: LabelledVisibility(required_labels="hr"), "not a single string"),
        (lambda: TenantVisibility(tenant_id=""), "non-blank string without NUL"),
        (lambda: TenantVisibility(tenant_id=42), "non-blank string without NUL, got 42"),
        (lambda: TenantVisibility(tenant_id="acme\x00"), "without NUL, got 'acme\\\\x00'"),
        (lambda: only_for(), "at least one name"),
        (lambda: only_for(["a", "b"]), r"separate arguments.*only_for\('a', 'b'\)"),
    ],
)
def test_bad_values_are_refused_saying_what_to_do(make: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        make()
    assert isinstance(info.value, ValueError)


def test_artifacts_are_public_by_default_and_carry_it_in_their_dict() -> None:
    plain = Artifact(type=MEMO, payload=Memo(text="x"))
    assert plain.visibility is PUBLIC
    secret = Artifact(type=MEMO, payload=Memo(text="x"), visibility=only_for("a"))
    data = secret.to_dict()
    assert data["visibility"] == {"kind": "Private", "agents": ["a"]}
    assert plain.to_dict()["visibility"] == {"kind": "Public"}
    assert ArtifactOut(**data).visibility == data["visibility"]  # the dashboard's API model


async def test_the_memory_store_keeps_the_visibility() -> None:
    store = MemoryStore()
    secret = Artifact(type=MEMO, payload=Memo(text="x"), visibility=TenantVisibility("t"))
    await store.put([secret])
    got = await store.get(secret.id)
    assert got is not None and got.visibility == TenantVisibility(tenant_id="t")
    (queried,) = await store.query(type=MEMO)
    assert queried.visibility == TenantVisibility(tenant_id="t")


# Publishing -------------------------------------------------------------------------------


async def test_a_private_publish_runs_only_the_named_agents() -> None:
    flock = Flock()
    ackers(flock, "alice", "bob", "carol")
    await flock.publish(Memo(text="secret"), visibility=only_for("alice", "carol"))
    await flock.publish(Memo(text="open"))  # public by default
    await flock.run_until_idle()
    assert await acked_by(flock) == [
        "alice:open",
        "alice:secret",
        "bob:open",
        "carol:open",
        "carol:secret",
    ]
    secret = (await flock.store.query(type=MEMO))[0]
    assert secret.visibility == only_for("alice", "carol")
    # The owner's own reads are not filtered.
    assert [m.text for m in await flock.store.payloads(Memo)] == ["secret", "open"]


async def test_publish_many_and_lists_carry_the_visibility_to_every_artifact() -> None:
    flock = Flock()
    ackers(flock, "alice", "bob")
    many = await flock.publish_many(
        [Memo(text="m1"), Memo(text="m2")], visibility=only_for("alice")
    )
    listed = await flock.publish([Memo(text="l1")], visibility=only_for("bob"))
    await flock.run_until_idle()
    assert {a.visibility for a in many} == {only_for("alice")}
    assert [a.visibility for a in listed] == [only_for("bob")]
    assert await acked_by(flock) == ["alice:m1", "alice:m2", "bob:l1"]


async def test_labels_and_tenants_decide_who_runs() -> None:
    flock = Flock()
    ackers(flock, "plain")
    flock.agent("hr").labels("hr").labels("eu", "staff").consumes(Memo).publishes(Ack).with_engines(
        lambda m: Ack(by="hr", text=m.text)
    ).without_output()
    flock.agent("acme").tenant("acme").consumes(Memo).publishes(Ack).with_engines(
        lambda m: Ack(by="acme", text=m.text)
    ).without_output()
    assert flock.get_agent("hr").labels == frozenset({"hr", "eu", "staff"})  # labels add up
    await flock.publish(Memo(text="payroll"), visibility=LabelledVisibility({"hr", "eu"}))
    await flock.publish(Memo(text="us-only"), visibility=LabelledVisibility({"hr", "us"}))
    await flock.publish(Memo(text="acme"), visibility=TenantVisibility(tenant_id="acme"))
    await flock.publish(Memo(text="globex"), visibility=TenantVisibility(tenant_id="globex"))
    await flock.run_until_idle()
    assert await acked_by(flock) == ["acme:acme", "hr:payroll"]


async def test_where_predicates_never_see_an_artifact_the_agent_may_not_see() -> None:
    flock = Flock()
    seen: list[str] = []

    def where(memo: Memo) -> bool:
        seen.append(memo.text)
        return True

    flock.agent("bob").consumes(Memo, where=where).publishes(Ack).with_engines(
        lambda m: Ack(by="bob")
    ).without_output()
    ackers(flock, "alice")
    await flock.publish(Memo(text="for alice"), visibility=only_for("alice"))
    await flock.publish(Memo(text="for all"))
    await flock.run_until_idle()
    assert seen == ["for all"]


@pytest.mark.parametrize(
    ("visibility", "message"),
    [
        ("private", "takes a visibility such as PublicVisibility()"),
        ({"alice"}, "takes a visibility such as"),
        (PrivateVisibility, r"call it: PublicVisibility\(\)"),
        (TenantVisibility(), "has no tenant.*TenantVisibility\\(tenant_id='acme'\\)"),
        (only_for("alice", "alcie"), "names 'alcie'.*agents: alice, bob.*check the spelling"),
    ],
)
async def test_publish_refuses_bad_visibilities_and_stores_nothing(
    visibility: Any, message: str
) -> None:
    flock = Flock()
    ackers(flock, "alice", "bob")
    with pytest.raises(ConfigurationError, match=message):
        await flock.publish(Memo(text="x"), visibility=visibility)
    with pytest.raises(ConfigurationError, match=message):
        await flock.publish_many([Memo(text="y")], visibility=visibility)
    assert await flock.store.query() == []


# Agent outputs -----------------------------------------------------------------------------


def auditing(flock: Flock, visibility: Visibility | None) -> None:
    """'clerk' turns a Memo into a Note (with ``visibility``) and an Ack (public); 'auditor'
    and 'reader' both consume Notes."""
    flock.agent("clerk").consumes(Memo).publishes(Ack).publishes(
        Note, visibility=visibility
    ).with_engines(lambda m: [Note(text=m.text), Ack(by="clerk")]).without_output()
    for name in ("auditor", "reader"):
        flock.agent(name).consumes(Note).publishes(Review).with_engines(
            lambda n: Review(score=1)
        ).without_output()


async def test_an_agents_outputs_of_a_type_get_its_default_visibility() -> None:
    flock = Flock()
    auditing(flock, only_for("auditor"))
    await flock.publish(Memo(text="ledger"))
    await flock.run_until_idle()
    (note,) = await flock.store.query(type=NOTE)
    (ack,) = await flock.store.query(type=ACK)
    assert note.visibility == only_for("auditor") and ack.visibility is PUBLIC
    reviews = await flock.store.query(type=registry.name_of(Review))
    assert [r.produced_by for r in reviews] == ["auditor"]
    assert await flock.store.consumers(note.id) == ["auditor"]


async def test_publishes_without_visibility_keeps_the_earlier_one_and_public_resets() -> None:
    flock = Flock()
    auditing(flock, None)
    clerk = flock.get_agent("clerk")
    assert clerk.output_visibility == {}  # visibility=None sets nothing: public
    builder = AgentBuilder(clerk)
    builder.publishes(Note, visibility=only_for("auditor")).publishes(Note)
    assert clerk.output_visibility[Note] == only_for("auditor")  # kept
    assert clerk.outputs.count(Note) == 1
    builder.publishes(Note, visibility=PublicVisibility())
    await flock.publish(Memo(text="ledger"))
    await flock.run_until_idle()
    reviews = await flock.store.query(type=registry.name_of(Review))
    assert sorted(r.produced_by for r in reviews) == ["auditor", "reader"]


async def test_tenant_visibility_without_id_means_the_publishing_agents_tenant() -> None:
    flock = Flock()
    flock.agent("biller").tenant("acme").consumes(Memo).publishes(
        Invoice, visibility=TenantVisibility()
    ).with_engines(lambda m: Invoice(amount=1)).without_output()
    for name, tenant in (("acme_books", "acme"), ("globex_books", "globex"), ("anyone", None)):
        builder = flock.agent(name)
        if tenant:
            builder.tenant(tenant)
        builder.consumes(Invoice).publishes(Ack).with_engines(
            lambda i, n=name: Ack(by=n)
        ).without_output()
    await flock.publish(Memo(text="bill"))
    await flock.run_until_idle()
    (invoice,) = await flock.store.query(type=registry.name_of(Invoice))
    assert invoice.visibility == TenantVisibility(tenant_id="acme")  # stored resolved
    assert await acked_by(flock) == ["acme_books:"]


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda b: b.publishes(Note, visibility=TenantVisibility()),
            r"TenantVisibility\(\) means the agent's own tenant, but it has none.*\.tenant\(",
        ),
        (
            lambda b: b.publishes(Note, visibility=only_for("auditr")),
            r"publishes\(Note, visibility=...\).*names 'auditr'.*check the spelling",
        ),
    ],
)
async def test_output_visibilities_that_cannot_hold_fail_when_the_flock_is_first_used(
    declare: Any, message: str
) -> None:
    flock = Flock()
    ackers(flock, "auditor")
    declare(flock.agent("clerk").consumes(Memo).with_engines(lambda m: Note(text="n")))
    with pytest.raises(ConfigurationError, match=message):
        await flock.publish(Memo(text="x"))
    assert await flock.store.query() == []


async def test_the_check_runs_again_once_the_named_agent_is_declared() -> None:
    flock = Flock()
    flock.agent("clerk").consumes(Memo).publishes(
        Note, visibility=only_for("auditor")
    ).with_engines(lambda m: Note(text=m.text)).without_output()
    with pytest.raises(ConfigurationError, match="names 'auditor'"):
        await flock.publish(Memo(text="early"))
    notes: list[str] = []
    flock.agent("auditor").consumes(Note).with_engines(lambda n: notes.append(n.text))
    await flock.publish(Memo(text="late"))
    await flock.run_until_idle()
    assert notes == ["late"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.publishes(Note, visibility="private"), "takes a visibility such as"),
        (lambda b: b.publishes(visibility=only_for("x")), "needs the types it applies to"),
        (lambda b: b.labels(), "at least one label"),
        (lambda b: b.labels("ok", 5), "non-blank string without NUL, got 5"),
        (lambda b: b.labels(["a", "b"]), r"separate arguments.*\.labels\('a', 'b'\)"),
        (lambda b: b.labels(""), "non-blank string without NUL"),
        (lambda b: b.tenant(""), "tenant\\(\\) takes a non-blank string without NUL"),
        (lambda b: b.tenant(None), "tenant\\(\\) takes a non-blank string without NUL, got None"),
        (lambda b: b.tenant(["acme"]), "non-blank string without NUL"),
    ],
)
def test_builder_misuse_is_refused_at_the_call(call: Any, message: str) -> None:
    flock = Flock()
    builder = flock.agent("clerk").consumes(Memo)
    with pytest.raises(ConfigurationError, match=f"agent 'clerk': .*{message}"):
        call(builder)
    agent = flock.get_agent("clerk")
    assert agent.labels == frozenset() and agent.tenant_id is None
    assert agent.output_visibility == {}


# Fan-in -----------------------------------------------------------------------------------


async def test_a_batch_collects_only_the_artifacts_its_agent_may_see() -> None:
    flock = Flock()
    batches: list[list[str]] = []

    def digest(memos: list[Memo]) -> Ack:
        batches.append([m.text for m in memos])
        return Ack(by="digest")

    flock.agent("digest").labels("ops").consumes(Memo, batch=3).publishes(Ack).with_engines(
        digest
    ).without_output()
    ackers(flock, "other")
    await flock.publish(Memo(text="a"))
    await flock.publish(Memo(text="hidden1"), visibility=only_for("other"))
    await flock.publish(Memo(text="b"), visibility=LabelledVisibility({"ops"}))
    await flock.publish(Memo(text="hidden2"), visibility=TenantVisibility(tenant_id="t"))
    await flock.publish(Memo(text="c"), visibility=only_for("digest", "other"))
    await flock.run_until_idle()
    assert batches == [["a", "b", "c"]]  # full at the third visible one


async def test_a_join_only_pairs_artifacts_its_agent_may_see() -> None:
    flock = Flock()
    shipped: list[tuple[str, str]] = []

    def ship(order: Order, payment: Payment) -> Ack:
        shipped.append((order.id, payment.order_id))
        return Ack(by="ship", text=order.id)

    flock.agent("ship").consumes(
        Order, Payment, join=True, join_by=lambda p: p.id if isinstance(p, Order) else p.order_id
    ).publishes(Ack).with_engines(ship).without_output()
    ackers(flock, "bank")
    await flock.publish(Order(id="o1"))
    await flock.publish(Payment(order_id="o1"), visibility=only_for("bank"))  # not for ship
    await flock.run_until_idle()
    assert shipped == []
    assert flock._fanin.waiting() == 1  # the order still waits; the payment never did
    await flock.publish(Payment(order_id="o1"), visibility=only_for("ship"))
    await flock.run_until_idle()
    assert shipped == [("o1", "o1")]


# DSPyEngine's conversation context ---------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def context_of(request: dict[str, Any]) -> str:
    content = request["messages"][-1]["content"]
    assert "[[ ## context ## ]]" in content, content
    return str(content.split("[[ ## context ## ]]", 1)[1])


async def test_dspy_context_leaves_out_what_the_agent_may_not_see(
    server: FakeOpenAIServer,
) -> None:
    flock = Flock("openai/m")
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        DSPyEngine(api_base=server.base_url, api_key="k")
    ).without_output()
    flock.agent("vault").tenant("bank").consumes(Review).with_engines(lambda r: None)
    await flock.publish(Note(text="PUBLIC-NOTE"), correlation_id="c1")
    await flock.publish(Note(text="VAULT-ONLY"), correlation_id="c1", visibility=only_for("vault"))
    await flock.publish(
        Note(text="BANK-TENANT"), correlation_id="c1", visibility=TenantVisibility("bank")
    )
    await flock.publish(Note(text="CHEF-TOO"), correlation_id="c1", visibility=only_for("chef"))
    await flock.publish(Idea(topic="dinner"), correlation_id="c1")
    await flock.run_until_idle()
    (request,) = server.requests
    context = context_of(request)
    assert "PUBLIC-NOTE" in context and "CHEF-TOO" in context
    assert "VAULT-ONLY" not in json.dumps(request) and "BANK-TENANT" not in json.dumps(request)


async def test_hidden_artifacts_do_not_use_up_the_context_limit(
    server: FakeOpenAIServer,
) -> None:
    flock = Flock("openai/m")
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        DSPyEngine(api_base=server.base_url, api_key="k", context_limit=2)
    ).without_output()
    ackers(flock, "vault")
    await flock.publish(Note(text="OLD-VISIBLE-1"), correlation_id="c1")
    await flock.publish(Note(text="OLD-VISIBLE-2"), correlation_id="c1")
    await flock.publish_many(
        [Note(text=f"HIDDEN-{i}") for i in range(7)],
        correlation_id="c1",
        visibility=only_for("vault"),
    )
    await flock.publish(Idea(topic="dinner"), correlation_id="c1")
    await flock.run_until_idle()
    context = context_of(server.requests[0])
    assert "OLD-VISIBLE-1" in context and "OLD-VISIBLE-2" in context
    assert "HIDDEN" not in context


async def test_visible_artifacts_reads_back_until_it_has_enough() -> None:
    store = MemoryStore()
    visible = [
        Artifact(type=NOTE, payload=Note(text=f"v{i}"), correlation_id="w") for i in range(3)
    ]
    hidden = [
        Artifact(
            type=NOTE, payload=Note(text=f"h{i}"), correlation_id="w", visibility=only_for("x")
        )
        for i in range(20)
    ]
    mine = Artifact(type=NOTE, payload=Note(text="input"), correlation_id="w")
    await store.put([*visible, *hidden, mine])
    me = Who("me")
    got = await visible_artifacts(store, me, correlation_id="w", limit=2, exclude={mine.id})
    assert [a.payload.text for a in got] == ["v1", "v2"]  # type: ignore[attr-defined]
    everything = await visible_artifacts(store, me, correlation_id="w", limit=50)
    assert [a.payload.text for a in everything] == ["v0", "v1", "v2", "input"]  # type: ignore[attr-defined]
    assert await visible_artifacts(store, me, correlation_id="w", limit=0) == []
    as_x = await visible_artifacts(store, Who("x"), correlation_id="w", limit=1, exclude={mine.id})
    assert [a.payload.text for a in as_x] == ["h19"]  # type: ignore[attr-defined]


# Tracing ----------------------------------------------------------------------------------


def visibility_attribute(span: Any) -> object:
    return (span.attributes or {}).get("flock.artifact.visibility")


async def test_spans_record_the_kind_of_non_public_artifacts_only(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    auditing(flock, only_for("auditor"))
    flock.agent("tagger").labels("ops").consumes(Review).publishes(Ack).with_engines(
        lambda r: Ack(by="tagger")
    ).without_output()
    await flock.publish(Memo(text="open"))
    await flock.publish(Memo(text="closed"), visibility=LabelledVisibility({"nobody"}))
    await flock.publish(Note(text="n"), visibility=only_for("reader"))
    await flock.run_until_idle()
    publishes = [visibility_attribute(s) for s in capture.named("Flock.publish")]
    assert publishes == [None, "Labelled", "Private"]
    executes = {
        (s.attributes or {})["gen_ai.agent.name"]: visibility_attribute(s)
        for s in capture.named("Agent.execute")
    }
    # clerk published a private Note (and a public Ack); the others only public outputs.
    assert executes == {"clerk": "Private", "auditor": None, "reader": None, "tagger": None}


async def test_mixed_output_kinds_are_listed_sorted(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("reader").consumes(Ack).with_engines(lambda a: None)
    flock.agent("multi").tenant("t").consumes(Memo).publishes(
        Note, visibility=only_for("reader")
    ).publishes(Ack, visibility=TenantVisibility()).with_engines(
        lambda m: [Note(text="n"), Ack(by="m")]
    ).without_output()
    await flock.publish(Memo(text="x"))
    await flock.run_until_idle()
    (execute,) = [
        s
        for s in capture.named("Agent.execute")
        if s.attributes["gen_ai.agent.name"] == "multi"  # type: ignore[index]
    ]
    assert visibility_attribute(execute) == "Private,Tenant"


def test_allows_takes_the_builder_flock_agent_returns() -> None:
    """Its .labels is the builder method and it had no tenant_id: allows() crashed."""
    flock = Flock()
    legal = flock.agent("legal").labels("legal").tenant("acme")
    other = flock.agent("other")
    for visibility in (LabelledVisibility({"legal"}), TenantVisibility("acme"), only_for("legal")):
        assert visibility.allows(legal)
        assert not visibility.allows(other)
