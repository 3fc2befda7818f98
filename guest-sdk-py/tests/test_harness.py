"""The harness applies the host's rules: whole batches or nothing, the same
write refusals, strict delivery, every exception mapped to a handle-error."""

import math

import pytest

from projector_guest import Event, InvalidEvent, Projection, ReadModel, event_type, log, rules
from projector_guest.testing import BatchError, Harness, TestEvent


class Orders(Projection):
    name = "orders"
    version = "1.0.0"
    event_types = ["OrderPlaced"]
    streams = ["order-"]

    def apply(self, event: Event, model: ReadModel) -> None:
        order = event.json()
        if order.get("fail") == "key-error":
            order["missing"]
        model.put("orders", event.stream_id, {"total": order.get("total"), "position": event.commit_position})
        model.update("totals", "all", lambda: {"count": 0}, lambda t: {"count": t["count"] + 1})
        log.info(f"placed {event.stream_id}")


def placed(stream: str, **body) -> TestEvent:
    return TestEvent.json("OrderPlaced", body or {"total": 1}).stream(stream)


def refusal(harness: Harness, events) -> BatchError:
    with pytest.raises(BatchError) as failed:
        harness.given(events)
    return failed.value


def test_documents_come_from_events_and_positions_count_every_event():
    harness = Harness(Orders)
    harness.given([placed("order-1", total=5), placed("order-2", total=7)])
    assert harness.document("orders", "order-2") == {"total": 7, "position": 2}
    assert harness.document("totals", "all") == {"count": 2}
    assert harness.collections() == ["orders", "totals"]
    assert harness.take_logs() == [("info", "placed order-1"), ("info", "placed order-2")]


def test_a_failing_event_discards_the_batchs_writes_and_its_events_keep_their_positions():
    harness = Harness(Orders)
    harness.given([placed("order-1")])
    error = refusal(harness, [placed("order-2"), TestEvent.raw("OrderPlaced", "{not json").stream("order-3")])
    assert (error.event_index, error.kind) == (1, "invalid-event")
    assert error.message.startswith("OrderPlaced order-3@0: ")
    assert harness.document("orders", "order-2") is None
    harness.given([placed("order-4")])
    assert harness.document("orders", "order-4")["position"] == 4


def test_every_exception_becomes_a_handle_error_with_its_message():
    error = refusal(Harness(Orders), [placed("order-1", fail="key-error")])
    assert (error.kind, error.message) == ("other", "KeyError: 'missing'")


def writer(document, collection="c", key="k"):
    class Writer(Projection):
        name = "writer"
        version = "1"

        def apply(self, event, model):
            model.put(collection, key, document)

    return Writer


def refused(projection) -> str:
    error = refusal(Harness(projection), [TestEvent.json("Any", {})])
    assert error.kind == "read-model"
    return error.message


def test_writes_the_host_refuses_are_refused_the_same_way():
    deep = []
    for _ in range(128):
        deep = [deep]
    assert "nest deeper than 128" in refused(writer(deep))
    Harness(writer(deep[0])).given([TestEvent.json("Any", {})])
    assert "larger than the limit of 1048576 bytes" in refused(writer("x" * rules.MAX_DOCUMENT_BYTES))
    assert "lone surrogate" in refused(writer("\ud800 alone"))
    Harness(writer("\U0001f600 \\ud800 is text")).given([TestEvent.json("Any", {})])
    assert "cannot be written as JSON" in refused(writer(math.nan))
    assert "cannot be written as JSON" in refused(writer({1, 2}))
    assert "beyond the range of a 64-bit float" in refused(writer({"n": [2**1030]}))
    Harness(writer({"n": 2**1023})).given([TestEvent.json("Any", {})])
    assert rules.NAME_MESSAGE in refused(writer({}, "", "k"))
    assert rules.NAME_MESSAGE in refused(writer({}, "c", "é" * 513))
    Harness(writer({}, "c", "é" * 512)).given([TestEvent.json("Any", {})])


def test_an_event_the_projection_would_never_receive_fails_the_batch_and_says_why():
    harness = Harness(Orders)
    error = refusal(harness, [placed("order-1"), TestEvent.json("OrderPlaced", {})])
    assert error.event_index == 1
    assert error.message == (
        "event 1 (stream `test`, type `OrderPlaced`) would never reach `orders`: its stream matches none of the "
        "stream prefixes ['order-'] (`test` is the default: set one with `.stream(...)`); give it a stream and "
        "type the projection wants, or mark it `.expect_ignored()` to test that it is ignored"
    )
    error = refusal(harness, [TestEvent.json("OrderPlacedTwice", {}).stream("order-1")])
    assert "its type is not one the projection asks for (event types ['OrderPlaced'])" in error.message
    error = refusal(harness, [placed("order-1").expect_ignored()])
    assert "is marked `expect_ignored` but `orders` wants it" in error.message
    harness.given([placed("audit-1").expect_ignored(), placed("order-1")])
    assert harness.collection("orders") == {"order-1": {"total": 1, "position": 2}}


def test_each_schema_version_is_read_by_its_reader_and_refusals_are_invalid_events():
    registered = event_type("Registered", {1: lambda p: {**p, "at": None}, 2: lambda p: {"id": p["id"], "at": p["at"]}})

    class Users(Projection):
        name = "users"
        version = "1"
        event_types = ["Registered"]

        def apply(self, event, model):
            user = event.decode(registered)
            model.put("users", user["id"], {"at": user["at"] or event.created_rfc3339()})

    harness = Harness(Users)
    harness.given([TestEvent.json("Registered", {"id": "a"}).created_ms(1_795_435_200_000)])
    assert harness.document("users", "a") == {"at": "2026-11-23T12:00:00.000Z"}
    error = refusal(harness, [TestEvent.json("Registered", {"id": "b"}).schema_version(2)])
    assert (error.kind, error.message) == ("invalid-event", "Registered v2 test@1: 'at'")
    error = refusal(harness, [TestEvent.json("Registered", {}).schema_version(7)])
    assert error.message == "Registered schema version 7 is unknown (known: 1, 2)"
    assert isinstance(InvalidEvent("x"), Exception)


def test_a_description_must_hold_lists_of_strings():
    with pytest.raises(TypeError, match=r"streams must be a list of strings, e\.g\. \['order-'\]"):

        class Wrong(Projection):
            name = "wrong"
            version = "1"
            streams = "order-"


def test_the_clock_and_randomness_raise_while_a_projection_runs_and_come_back_after():
    import random
    import time

    class Clock(Projection):
        name = "clock"
        version = "1"

        def apply(self, event, model):
            model.put("t", "k", time.time())

    class Dice(Projection):
        name = "dice"
        version = "1"

        def apply(self, event, model):
            model.put("d", "k", random.randint(1, 6))

    for projection, what in ((Clock, "time.time()"), (Dice, "random.randint()")):
        error = refusal(Harness(projection), [TestEvent.json("Any", {})])
        assert error.message == f"RuntimeError: {what} is not available in a projection: it must give the same documents for the same events (use event.created_ms for time)"
    assert time.time() > 0 and 1 <= random.randint(1, 6) <= 6


def test_each_batch_gets_a_new_instance_so_nothing_kept_on_self_survives():
    class Counter(Projection):
        name = "counter"
        version = "1"

        def __init__(self):
            self.seen = 0

        def apply(self, event, model):
            self.seen += 1
            model.put("seen", event.event_id, self.seen)

    harness = Harness(Counter)
    harness.given([TestEvent.json("A", {})])
    harness.given([TestEvent.json("A", {})])
    assert sorted(harness.collection("seen").values()) == [1, 1]


def test_the_schema_version_is_read_as_the_rust_sdk_reads_it():
    def event(metadata: bytes) -> Event:
        return Event("s", "T", "id", 0, 1, 0, "application/json", b"{}", metadata)

    assert event(b"").schema_version() == 1
    assert event(b"null").schema_version() == 1
    assert event(b'{"schemaVersion": 0}').schema_version() == 0
    with pytest.raises(InvalidEvent, match="schemaVersion -1 is not a version number"):
        event(b'{"schemaVersion": -1}').schema_version()
