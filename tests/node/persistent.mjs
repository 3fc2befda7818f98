// Persistent subscriptions on the embedded event store, driven by the
// official Node.js client: management calls and their errors, where a group
// starts, competing consumers, the subscriber limit and a filtered group on
// $all (nacks, timeouts and restarts are in persistent-failures.mjs). Usage:
//   node persistent.mjs <connection string>
// Every check asserts what the consumers actually received, by event id:
// who got what, how often, with which retry count. Waits are for an outcome
// (harness.mjs); no check sleeps for a fixed time to let something happen.
// Exits non-zero with a message on the first failed check.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  jsonEvent,
  START,
  END,
  ROUND_ROBIN,
  DISPATCH_TO_SINGLE,
  UNBOUNDED,
  streamNameFilter,
  persistentSubscriptionToStreamSettingsFromDefaults,
  persistentSubscriptionToAllSettingsFromDefaults,
  PersistentSubscriptionExistsError,
  PersistentSubscriptionDoesNotExistError,
  PersistentSubscriptionDroppedError,
  PersistentSubscriptionMaximumSubscribersReachedError,
} from "@eventstore/db-client";
import { connect, check, within, waitFor, consume, numbered, ns } from "./harness.mjs";

const client = connect("node persistent.mjs <connection string>");
const toStream = (stream, group, options) => consume(client.subscribeToPersistentSubscriptionToStream(stream, group, options));
const info = (stream, group) => client.getPersistentSubscriptionToStreamInfo(stream, group);
const run = randomUUID().slice(0, 8);

await check("a group's settings read back as created; it is listed; a second create is PersistentSubscriptionExistsError", async () => {
  const stream = `managed-${run}`;
  const group = `settings-${run}`;
  const settings = persistentSubscriptionToStreamSettingsFromDefaults({
    startFrom: START,
    consumerStrategyName: DISPATCH_TO_SINGLE,
    messageTimeout: 12_345,
    maxRetryCount: 4,
    liveBufferSize: 64,
    readBatchSize: 8,
    historyBufferSize: 96,
    checkPointAfter: 1_500,
    checkPointLowerBound: 3,
    checkPointUpperBound: 30,
    maxSubscriberCount: 5,
    extraStatistics: true,
  });
  await client.createPersistentSubscriptionToStream(stream, group, settings);
  const created = await info(stream, group);
  assert.equal(created.eventSource, stream);
  assert.equal(created.groupName, group);
  // The client maps every setting back, under the names it sends them with.
  assert.deepEqual(created.settings, settings);
  assert.equal(created.settings.startFrom, START);
  assert.equal(created.settings.consumerStrategyName, "DispatchToSingle");
  assert.deepEqual(created.connections, []);
  assert.equal(created.stats.parkedMessageCount, 0n);

  const forStream = await client.listPersistentSubscriptionsToStream(stream);
  assert.deepEqual(forStream.map((i) => [i.eventSource, i.groupName]), [[stream, group]]);
  assert.deepEqual(forStream[0].settings, settings);
  const everywhere = await client.listAllPersistentSubscriptions();
  assert.ok(
    everywhere.some((i) => i.eventSource === stream && i.groupName === group),
    "listAllPersistentSubscriptions includes the group",
  );

  await assert.rejects(
    client.createPersistentSubscriptionToStream(stream, group, persistentSubscriptionToStreamSettingsFromDefaults()),
    (error) => error instanceof PersistentSubscriptionExistsError && error.streamName === stream && error.groupName === group,
  );
  assert.deepEqual((await info(stream, group)).settings, settings, "the refused create changed nothing");
});

await check("an update changes the settings and drops the connected consumers with PersistentSubscriptionDroppedError", async () => {
  const stream = `managed-${run}`;
  const group = `settings-${run}`;
  const consumer = toStream(stream, group);
  await consumer.confirmed;
  assert.equal((await info(stream, group)).connections.length, 1);
  const updated = persistentSubscriptionToStreamSettingsFromDefaults({
    startFrom: START,
    consumerStrategyName: ROUND_ROBIN,
    messageTimeout: 2_000,
    maxRetryCount: 9,
    liveBufferSize: 32,
    readBatchSize: 4,
    historyBufferSize: 48,
    maxSubscriberCount: UNBOUNDED,
  });
  await client.updatePersistentSubscriptionToStream(stream, group, updated);
  const dropped = await within("the consumer to be dropped", consumer.ended);
  assert.ok(dropped instanceof PersistentSubscriptionDroppedError, `dropped with ${dropped}`);
  const after = await info(stream, group);
  assert.deepEqual(after.settings, updated);
  assert.deepEqual(after.connections, []);
});

await check("a deleted group is PersistentSubscriptionDoesNotExistError for info, subscribe, update and delete", async () => {
  const stream = `managed-${run}`;
  const group = `settings-${run}`;
  await client.deletePersistentSubscriptionToStream(stream, group);
  const missing = (error) =>
    error instanceof PersistentSubscriptionDoesNotExistError && error.streamName === stream && error.groupName === group;
  await assert.rejects(info(stream, group), missing);
  await assert.rejects(client.deletePersistentSubscriptionToStream(stream, group), missing);
  await assert.rejects(
    client.updatePersistentSubscriptionToStream(stream, group, persistentSubscriptionToStreamSettingsFromDefaults()),
    missing,
  );
  const consumer = toStream(stream, group);
  await assert.rejects(consumer.confirmed, missing);
  assert.ok(
    !(await client.listAllPersistentSubscriptions()).some((i) => i.eventSource === stream && i.groupName === group),
    "the deleted group is no longer listed",
  );
});

await check("a group created from END (the client's default) receives only events appended after it", async () => {
  // The Node client sends a stream group's start in the deprecated
  // `settings.revision` field: 0 for START, u64::MAX for END.
  const stream = `from-end-${run}`;
  const group = `late-${run}`;
  await client.appendToStream(stream, numbered(0, 3));
  await client.createPersistentSubscriptionToStream(stream, group, persistentSubscriptionToStreamSettingsFromDefaults());
  assert.equal((await info(stream, group)).settings.startFrom, END);
  const consumer = toStream(stream, group);
  await consumer.confirmed;
  await client.appendToStream(stream, numbered(3, 5));
  const got = await consumer.take(2, "the events appended after the group");
  assert.deepEqual(ns(got), [3, 4]);
  await consumer.subscription.ack(...got);
  await consumer.subscription.unsubscribe();
  await client.deletePersistentSubscriptionToStream(stream, group);
});

await check("a group created from a revision starts there", async () => {
  const stream = `from-end-${run}`;
  const group = `middle-${run}`;
  await client.createPersistentSubscriptionToStream(stream, group, persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: 2n }));
  assert.equal((await info(stream, group)).settings.startFrom, 2n);
  const consumer = toStream(stream, group);
  const got = await consumer.take(3, "revisions 2 to 4");
  assert.deepEqual(ns(got), [2, 3, 4]);
  await consumer.subscription.ack(...got);
  await consumer.subscription.unsubscribe();
});

await check("two competing consumers (RoundRobin) share 50 events: each delivered once, to one of them, acked once", async () => {
  const stream = `compete-${run}`;
  const group = `workers-${run}`;
  await client.createPersistentSubscriptionToStream(
    stream,
    group,
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START, consumerStrategyName: ROUND_ROBIN }),
  );
  // Both join before there is anything to hand out, so neither drains it alone.
  const consumers = [toStream(stream, group, { bufferSize: 5 }), toStream(stream, group, { bufferSize: 5 })];
  await Promise.all(consumers.map((c) => c.confirmed));
  assert.equal((await info(stream, group)).connections.length, 2);
  const written = numbered(0, 50);
  await client.appendToStream(stream, written);

  const receivedBy = new Map(); // event id -> indexes of the consumers it reached
  const retried = [];
  let acked = 0;
  let allAcked;
  const done = new Promise((resolve) => (allAcked = resolve));
  consumers.forEach((consumer, index) => {
    (async () => {
      for (;;) {
        const delivery = await consumer.next("more of the 50 events");
        const id = delivery.event.id;
        receivedBy.set(id, [...(receivedBy.get(id) ?? []), index]);
        if (delivery.retryCount !== 0) retried.push(delivery);
        await consumer.subscription.ack(delivery);
        acked += 1;
        if (acked === written.length) allAcked();
      }
    })().catch(() => {}); // Ends with the check: a timeout here fails `done` below.
  });
  await within("50 acks", done);
  consumers.forEach((c) => c.close());

  assert.deepEqual([...receivedBy.keys()].sort(), written.map((e) => e.id).sort(), "every event arrived");
  const twice = [...receivedBy.entries()].filter(([, who]) => who.length > 1);
  assert.deepEqual(twice, [], "no event arrived twice");
  assert.deepEqual(retried, [], "no event was a retry");
  const share = [0, 1].map((index) => [...receivedBy.values()].filter((who) => who[0] === index).length);
  assert.ok(share[0] > 0 && share[1] > 0, `both consumers received events: ${share}`);

  // The server agrees: 50 deliveries in all, none outstanding, nothing waiting.
  const settled = await waitFor("the group to see every ack", async () => {
    const now = await info(stream, group);
    return now.stats.totalInFlightMessages === 0 && now.stats.retryBufferCount === 0 ? now : undefined;
  });
  assert.equal(settled.stats.totalItems, 50n);
  assert.deepEqual(
    settled.connections.map((c) => c.totalItems).sort(),
    share.map(BigInt).sort(),
    "each connection's count is what it received",
  );

  // Nothing acked comes again: a new consumer's first event is the next one appended.
  await Promise.all(consumers.map((c) => c.subscription.unsubscribe()));
  const late = toStream(stream, group);
  await late.confirmed;
  await client.appendToStream(stream, numbered(50, 51));
  const next = await late.next("the event after the 50");
  assert.equal(next.event.data.n, 50);
  assert.equal(next.retryCount, 0);
  await late.subscription.ack(next);
  await late.subscription.unsubscribe();
});

await check("a group on the stream refuses a consumer past maxSubscriberCount", async () => {
  const stream = `crowd-${run}`;
  const group = `one-${run}`;
  await client.createPersistentSubscriptionToStream(
    stream,
    group,
    persistentSubscriptionToStreamSettingsFromDefaults({ maxSubscriberCount: 1 }),
  );
  const first = toStream(stream, group);
  await first.confirmed;
  const second = toStream(stream, group);
  await assert.rejects(second.confirmed, (error) => error instanceof PersistentSubscriptionMaximumSubscribersReachedError);
  await first.subscription.unsubscribe();
});

await check("a group on $all with a stream-name prefix filter receives only the matching streams' events", async () => {
  const prefix = `psall-${run}-`;
  const group = `filtered-${run}`;
  await client.createPersistentSubscriptionToAll(group, persistentSubscriptionToAllSettingsFromDefaults({ startFrom: START }), {
    filter: streamNameFilter({ prefixes: [prefix] }),
  });
  const created = await client.getPersistentSubscriptionToAllInfo(group);
  assert.equal(created.eventSource, "$all");
  assert.equal(created.settings.startFrom, START);
  assert.ok(
    (await client.listPersistentSubscriptionsToAll()).some((i) => i.groupName === group),
    "listPersistentSubscriptionsToAll includes the group",
  );
  await client.appendToStream(`${prefix}a`, jsonEvent({ type: "Match", data: { n: 1 } }));
  await client.appendToStream(`other-${run}`, jsonEvent({ type: "Match", data: { n: -1 } }));
  await client.appendToStream(`${prefix}b`, jsonEvent({ type: "Match", data: { n: 2 } }));
  await client.appendToStream(`x${prefix}c`, jsonEvent({ type: "Match", data: { n: -2 } }));
  const consumer = consume(client.subscribeToPersistentSubscriptionToAll(group));
  const history = await consumer.take(2, "the two matching events written before the subscription");
  await client.appendToStream(`other-${run}`, jsonEvent({ type: "Match", data: { n: -3 } }));
  await client.appendToStream(`${prefix}a`, jsonEvent({ type: "Match", data: { n: 3 } }));
  const live = await consumer.next("the matching event appended live");
  const got = [...history, live];
  assert.deepEqual(
    got.map((d) => [d.event.streamId, d.event.data.n]),
    [
      [`${prefix}a`, 1],
      [`${prefix}b`, 2],
      [`${prefix}a`, 3],
    ],
  );
  await consumer.subscription.ack(...got);
  await waitFor("the acks", async () => (await client.getPersistentSubscriptionToAllInfo(group)).stats.totalInFlightMessages === 0);
  assert.equal(consumer.pending(), 0, "no other event arrived");
  await consumer.subscription.unsubscribe();
  await client.deletePersistentSubscriptionToAll(group);
  await assert.rejects(
    client.getPersistentSubscriptionToAllInfo(group),
    (error) => error instanceof PersistentSubscriptionDoesNotExistError,
  );
});

await client.dispose();
console.log("all checks passed");
