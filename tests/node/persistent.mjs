// Persistent subscriptions on the embedded event store, driven by the
// official Node.js client. Usage:
//   node persistent.mjs <connection string>
// Every check asserts what the consumers actually received, by event id:
// who got what, how often, with which retry count. Waits are for an
// outcome (an event, an error, a state the server reports), each bounded
// by WAIT_MS so that a missing outcome fails with a message instead of
// hanging; no check sleeps for a fixed time to let something happen.
// Exits non-zero with a message on the first failed check.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import {
  EventStoreDBClient,
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
  StreamNotFoundError,
} from "@eventstore/db-client";

const connectionString = process.argv[2];
if (!connectionString) {
  console.error("usage: node persistent.mjs <connection string>");
  process.exit(2);
}
const client = EventStoreDBClient.connectionString(connectionString);

/** How long any one wait may take before the check fails. */
const WAIT_MS = 10_000;

async function check(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (error) {
    console.error(`FAIL ${name}\n`, error);
    process.exit(1);
  }
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within(what, promise, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` until it returns a truthy value (which is returned), for at most WAIT_MS. */
async function eventually(what, probe) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`);
    await delay(20);
  }
}

async function collect(read) {
  const events = [];
  for await (const resolved of read) events.push(resolved.event);
  return events;
}

/**
 * A consumer: the subscription, with its deliveries queued in arrival order.
 * `next()` is the next delivery (a ResolvedEvent with `retryCount`);
 * `confirmed` settles when the server confirms the subscription (or fails it);
 * `ended` resolves with the error that ended the subscription.
 */
function consume(subscription) {
  const queue = [];
  const waiting = [];
  let failure;
  let endedWith;
  const ended = new Promise((resolve) => (endedWith = resolve));
  const confirmed = within(
    "the subscription's confirmation",
    new Promise((resolve, reject) => {
      subscription.once("confirmation", resolve);
      subscription.once("error", reject);
    }),
  );
  // Awaited by the checks that care; a failure is also seen through `ended`.
  confirmed.catch(() => {});
  subscription.on("data", (resolved) => {
    const waiter = waiting.shift();
    if (waiter) waiter.resolve(resolved);
    else queue.push(resolved);
  });
  subscription.on("error", (error) => {
    failure = error;
    for (const waiter of waiting.splice(0)) waiter.reject(error);
    endedWith(error);
  });
  return {
    subscription,
    confirmed,
    ended,
    /** Deliveries received and not yet taken by `next`. */
    pending: () => queue.length,
    next(what = "the next delivery") {
      if (queue.length > 0) return Promise.resolve(queue.shift());
      if (failure) return Promise.reject(failure);
      return within(what, new Promise((resolve, reject) => waiting.push({ resolve, reject })));
    },
    /** Stops waiting: pending `next` calls fail. */
    close() {
      for (const waiter of waiting.splice(0)) waiter.reject(new Error("the consumer was closed"));
    },
    /** The next `n` deliveries. */
    async take(n, what = `${n} deliveries`) {
      const taken = [];
      while (taken.length < n) taken.push(await this.next(`${what} (${taken.length} so far)`));
      return taken;
    },
  };
}

function toStream(stream, group, options) {
  return consume(client.subscribeToPersistentSubscriptionToStream(stream, group, options));
}

function numbered(from, to, type = "N") {
  return Array.from({ length: to - from }, (_, i) => jsonEvent({ id: randomUUID(), type, data: { n: from + i } }));
}

const ns = (deliveries) => deliveries.map((d) => d.event.data.n);
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
  const settled = await eventually("the group to see every ack", async () => {
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

await check("nack: retry comes back with retryCount 1, skip never comes back, park goes to the parked stream", async () => {
  const stream = `nack-${run}`;
  const group = `picky-${run}`;
  await client.createPersistentSubscriptionToStream(
    stream,
    group,
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START, maxRetryCount: 5 }),
  );
  await client.appendToStream(stream, numbered(0, 4));
  const consumer = toStream(stream, group, { bufferSize: 10 });
  const [retry, skip, park, fine] = await consumer.take(4, "the four events");
  assert.deepEqual(ns([retry, skip, park, fine]), [0, 1, 2, 3]);
  assert.deepEqual([retry, skip, park, fine].map((d) => d.retryCount), [0, 0, 0, 0]);

  await consumer.subscription.nack("retry", "try again", retry);
  await consumer.subscription.nack("skip", "not for us", skip);
  await consumer.subscription.nack("park", "poison", park);
  await consumer.subscription.ack(fine);
  const again = await consumer.next("the retried event");
  assert.equal(again.event.id, retry.event.id);
  assert.equal(again.retryCount, 1);
  await consumer.subscription.ack(again);

  // A retry (or a skipped event coming back) would come before any new event.
  await client.appendToStream(stream, numbered(4, 5));
  const after = await consumer.next("the event appended after the nacks");
  assert.equal(after.event.data.n, 4, "the skipped and parked events did not come back");
  await consumer.subscription.ack(after);

  await eventually("parkedMessageCount 1 and nothing in flight", async () => {
    const now = await info(stream, group);
    return now.stats.parkedMessageCount === 1n && now.stats.totalInFlightMessages === 0;
  });
  const parkedStream = `$persistentsubscription-${stream}::${group}-parked`;
  const links = await collect(client.readStream(parkedStream));
  assert.equal(links.length, 1);
  assert.equal(links[0].type, "$>");
  const target = typeof links[0].data === "string" ? links[0].data : new TextDecoder().decode(links[0].data);
  assert.equal(target, `${park.event.revision}@${stream}`, "the link points at the parked event");
  assert.equal(consumer.pending(), 0, "nothing else was delivered");
  await consumer.subscription.unsubscribe();
});

await check("replayParkedMessagesToStream hands the parked event out again and empties the parked stream", async () => {
  const stream = `nack-${run}`;
  const group = `picky-${run}`;
  const consumer = toStream(stream, group, { bufferSize: 10 });
  await consumer.confirmed;
  await client.replayParkedMessagesToStream(stream, group);
  const replayed = await consumer.next("the replayed parked event");
  assert.equal(replayed.event.data.n, 2);
  assert.equal(replayed.event.streamId, stream);
  await consumer.subscription.ack(replayed);
  await eventually("parkedMessageCount 0 and nothing in flight", async () => {
    const now = await info(stream, group);
    return now.stats.parkedMessageCount === 0n && now.stats.totalInFlightMessages === 0;
  });
  const parkedStream = `$persistentsubscription-${stream}::${group}-parked`;
  const left = await collect(client.readStream(parkedStream)).catch((error) => {
    if (error instanceof StreamNotFoundError) return [];
    throw error;
  });
  assert.deepEqual(left, [], "the replayed link is no longer readable");
  // Acked once, it does not come back.
  await client.appendToStream(stream, numbered(5, 6));
  const next = await consumer.next("the event after the replay");
  assert.equal(next.event.data.n, 5);
  await consumer.subscription.ack(next);
  await consumer.subscription.unsubscribe();
});

await check("a nack with retry past maxRetryCount parks the event", async () => {
  const stream = `nack-${run}`;
  const group = `strict-${run}`;
  await client.createPersistentSubscriptionToStream(
    stream,
    group,
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: 4n, maxRetryCount: 2 }),
  );
  const consumer = toStream(stream, group, { bufferSize: 1 });
  const counts = [];
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const delivery = await consumer.next(`attempt ${attempt}`);
    assert.equal(delivery.event.data.n, 4);
    counts.push(delivery.retryCount);
    await consumer.subscription.nack("retry", "still failing", delivery);
  }
  assert.deepEqual(counts, [0, 1, 2]);
  const next = await consumer.next("the event after the parked one");
  assert.equal(next.event.data.n, 5, "after maxRetryCount retries the event is parked, not retried");
  await consumer.subscription.ack(next);
  await eventually("parkedMessageCount 1", async () => (await info(stream, group)).stats.parkedMessageCount === 1n);
  await consumer.subscription.unsubscribe();
});

await check("an event not acked within messageTimeout (300 ms) is delivered again with a retry count", async () => {
  const stream = `timeout-${run}`;
  const group = `slow-${run}`;
  await client.createPersistentSubscriptionToStream(
    stream,
    group,
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START, messageTimeout: 300, maxRetryCount: 10 }),
  );
  await client.appendToStream(stream, numbered(0, 1));
  const consumer = toStream(stream, group);
  const first = await consumer.next("the first delivery");
  const firstAt = Date.now();
  assert.equal(first.retryCount, 0);
  // Not acked: the server must hand it out again by itself.
  const again = await consumer.next("the redelivery after the timeout");
  const waited = Date.now() - firstAt;
  assert.equal(again.event.id, first.event.id);
  assert.ok(again.retryCount >= 1, `retryCount ${again.retryCount}`);
  assert.ok(waited >= 200, `redelivered after ${waited} ms, not before the timeout`);
  await consumer.subscription.ack(again);
  await client.appendToStream(stream, numbered(1, 2));
  const next = await consumer.next("the event after the acked one");
  assert.equal(next.event.data.n, 1, "the acked event did not time out again");
  assert.equal(next.retryCount, 0);
  await consumer.subscription.ack(next);
  await consumer.subscription.unsubscribe();
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
  await eventually("the acks", async () => (await client.getPersistentSubscriptionToAllInfo(group)).stats.totalInFlightMessages === 0);
  assert.equal(consumer.pending(), 0, "no other event arrived");
  await consumer.subscription.unsubscribe();
  await client.deletePersistentSubscriptionToAll(group);
  await assert.rejects(
    client.getPersistentSubscriptionToAllInfo(group),
    (error) => error instanceof PersistentSubscriptionDoesNotExistError,
  );
});

await check("restartPersistentSubscriptionSubsystem drops the consumer; a new one continues with what was not acked", async () => {
  const stream = `restart-${run}`;
  const group = `survivor-${run}`;
  await client.createPersistentSubscriptionToStream(
    stream,
    group,
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START }),
  );
  await client.appendToStream(stream, numbered(0, 10));
  const consumer = toStream(stream, group, { bufferSize: 20 });
  const got = await consumer.take(10, "the ten events");
  assert.deepEqual(ns(got), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  await consumer.subscription.ack(...got.slice(0, 4));
  await eventually("the four acks", async () => (await info(stream, group)).stats.totalInFlightMessages === 6);

  await client.restartPersistentSubscriptionSubsystem();
  const dropped = await within("the consumer to be dropped", consumer.ended);
  assert.ok(dropped instanceof PersistentSubscriptionDroppedError, `dropped with ${dropped}`);
  assert.equal(dropped.streamName, stream);
  assert.equal(dropped.groupName, group);

  const again = toStream(stream, group, { bufferSize: 20 });
  const rest = await again.take(6, "the six events not acked");
  assert.deepEqual(
    rest.map((d) => d.event.id),
    got.slice(4).map((d) => d.event.id),
    "exactly the unacked events, in order",
  );
  await again.subscription.ack(...rest);
  await client.appendToStream(stream, numbered(10, 11));
  const next = await again.next("the event after the restart");
  assert.equal(next.event.data.n, 10, "nothing acked came back");
  await again.subscription.ack(next);
  await again.subscription.unsubscribe();
});

await client.dispose();
console.log("all checks passed");
