// Persistent subscriptions on the embedded event store, driven by the
// official Node.js client: what happens when consumers do not simply ack.
// Retry, skip and park nacks, replaying parked events, retries past
// maxRetryCount, message timeouts and a restart of the subsystem
// (management and competing consumers are in persistent.mjs). Usage:
//   node persistent-failures.mjs <connection string>
// Every check asserts what the consumers actually received, by event id,
// and with which retry count. Waits are for an outcome (harness.mjs); no
// check sleeps for a fixed time to let something happen, and none assumes
// how soon the client sees a delivery.
// Exits non-zero with a message on the first failed check.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  START,
  persistentSubscriptionToStreamSettingsFromDefaults,
  PersistentSubscriptionDroppedError,
  StreamNotFoundError,
} from "@eventstore/db-client";
import { connect, check, collect, within, waitFor, consume, numbered, ns } from "./harness.mjs";

const client = connect("node persistent-failures.mjs <connection string>");
const toStream = (stream, group, options) => consume(client.subscribeToPersistentSubscriptionToStream(stream, group, options));
const info = (stream, group) => client.getPersistentSubscriptionToStreamInfo(stream, group);
const run = randomUUID().slice(0, 8);

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

  await waitFor("parkedMessageCount 1 and nothing in flight", async () => {
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
  await waitFor("parkedMessageCount 0 and nothing in flight", async () => {
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
  await waitFor("parkedMessageCount 1", async () => (await info(stream, group)).stats.parkedMessageCount === 1n);
  await consumer.subscription.unsubscribe();
});

await check("an event not acked within messageTimeout (300 ms) is delivered again with a retry count; acked, never again", async () => {
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
  assert.equal(first.retryCount, 0);
  // Not acked: the server must hand it out again by itself. When the client
  // sees either delivery depends on the machine's load, so nothing is timed.
  const again = await consumer.next("the redelivery after the timeout");
  assert.equal(again.event.id, first.event.id);
  assert.ok(again.retryCount >= 1, `retryCount ${again.retryCount}`);
  await consumer.subscription.ack(again);
  // The ack has taken effect when the server holds nothing and has nothing to
  // retry. A slow client may have been sent more redeliveries before that;
  // the ack (by event id) settles them too.
  const settled = (what) =>
    waitFor(what, async () => {
      const now = await info(stream, group);
      return now.stats.totalInFlightMessages === 0 && now.stats.retryBufferCount === 0 ? now : undefined;
    });
  const acked = await settled("the ack to take effect");
  await client.appendToStream(stream, numbered(1, 2));
  const sentBeforeTheAck = [];
  let next = await consumer.next("the event after the acked one");
  while (next.event.id === first.event.id) {
    sentBeforeTheAck.push(next);
    next = await consumer.next("the event after the acked one");
  }
  assert.equal(next.event.data.n, 1);
  assert.equal(next.retryCount, 0);
  await consumer.subscription.ack(next);
  const after = await settled("the second ack");
  const retries = [again, ...sentBeforeTheAck].map((d) => d.retryCount);
  assert.ok(retries.every((count, i) => i === 0 || count > retries[i - 1]), `retry counts ${retries}`);
  // Counted by the server: every delivery of the event reached the client,
  // and after the ack the server delivered only the next event.
  assert.equal(acked.stats.totalItems, BigInt(2 + sentBeforeTheAck.length), "deliveries before the ack");
  assert.equal(after.stats.totalItems, acked.stats.totalItems + 1n, "the acked event was not delivered again");
  assert.equal(consumer.pending(), 0, "nothing else was delivered");
  await consumer.subscription.unsubscribe();
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
  await waitFor("the four acks", async () => (await info(stream, group)).stats.totalInFlightMessages === 6);

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
