// Conformance checks for the embedded event store, run with the official
// Node.js client. Usage:
//   node conformance.mjs <connection string> [<anonymous> <wrong password>]
// With the two extra connection strings (a secure server: TLS and the admin
// user), every check runs with the right credentials, and calls without or
// with wrong ones must fail with AccessDeniedError.
// Exits non-zero with a message on the first failed check.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  EventStoreDBClient,
  jsonEvent,
  binaryEvent,
  NO_STREAM,
  STREAM_EXISTS,
  START,
  END,
  FORWARDS,
  BACKWARDS,
  streamNameFilter,
  WrongExpectedVersionError,
  StreamNotFoundError,
  StreamDeletedError,
  MaxAppendSizeExceededError,
  AccessDeniedError,
} from "@eventstore/db-client";
import { connect, check, collect } from "./harness.mjs";

const client = connect("node conformance.mjs <connection string> [<anonymous> <wrong password>]");
const refusedConnections = process.argv.slice(3);

const run = randomUUID().slice(0, 8);
const stream = `order-${run}`;

await check("append with no_stream through BatchAppend, and read back every field", async () => {
  const id = randomUUID();
  const result = await client.appendToStream(
    stream,
    [jsonEvent({ id, type: "OrderPlaced", data: { total: 42 }, metadata: { v: 2 } }), jsonEvent({ type: "OrderPaid", data: {} })],
    { expectedRevision: NO_STREAM },
  );
  assert.equal(result.success, true);
  assert.equal(result.nextExpectedRevision, 1n);
  const events = await collect(client.readStream(stream, { fromRevision: START, direction: FORWARDS, maxCount: 10 }));
  assert.equal(events.length, 2);
  assert.equal(events[0].id, id);
  assert.equal(events[0].type, "OrderPlaced");
  assert.equal(events[0].streamId, stream);
  assert.equal(events[0].revision, 0n);
  assert.deepEqual(events[0].data, { total: 42 });
  assert.deepEqual(events[0].metadata, { v: 2 });
  assert.equal(events[0].isJson, true);
  assert.ok(Math.abs(events[0].created - Date.now()) < 600_000, "created is now");
  assert.equal(events[1].position.commit, result.position.commit);
});

await check("a wrong expected revision is a WrongExpectedVersionError with both revisions", async () => {
  await assert.rejects(
    client.appendToStream(stream, jsonEvent({ type: "Late", data: {} }), { expectedRevision: 0n }),
    (error) => error instanceof WrongExpectedVersionError && error.expectedVersion === 0n && error.actualVersion === 1n,
  );
  await assert.rejects(
    client.appendToStream(`missing-${run}`, jsonEvent({ type: "X", data: {} }), { expectedRevision: STREAM_EXISTS }),
    (error) => error instanceof WrongExpectedVersionError,
  );
});

await check("a retried append with the same ids writes nothing new", async () => {
  const events = [jsonEvent({ id: randomUUID(), type: "A", data: {} }), jsonEvent({ id: randomUUID(), type: "B", data: {} })];
  const target = `retry-${run}`;
  const first = await client.appendToStream(target, events, { expectedRevision: NO_STREAM });
  const again = await client.appendToStream(target, events, { expectedRevision: NO_STREAM });
  assert.equal(again.position.commit, first.position.commit);
  assert.equal((await collect(client.readStream(target))).length, 2);
});

await check("an append over the size limit is a MaxAppendSizeExceededError", async () => {
  const huge = binaryEvent({ type: "Blob", data: new Uint8Array(1100 * 1024) });
  await assert.rejects(client.appendToStream(`blob-${run}`, huge), (error) => error instanceof MaxAppendSizeExceededError);
});

await check("an append split over several BatchAppend messages lands whole", async () => {
  const target = `chunked-${run}`;
  const events = Array.from({ length: 40 }, (_, n) => jsonEvent({ type: "Chunk", data: { n, pad: "x".repeat(2000) } }));
  const result = await client.appendToStream(target, events, { batchAppendSize: 16 * 1024 });
  assert.equal(result.nextExpectedRevision, 39n);
  const read = await collect(client.readStream(target));
  assert.deepEqual(read.map((e) => e.data.n), Array.from({ length: 40 }, (_, n) => n));
});

await check("reading a missing stream is a StreamNotFoundError", async () => {
  await assert.rejects(collect(client.readStream(`nobody-${run}`)), (error) => error instanceof StreamNotFoundError);
});

await check("$all reads backwards from the end", async () => {
  const events = await collect(client.readAll({ fromPosition: END, direction: BACKWARDS, maxCount: 3 }));
  assert.equal(events.length, 3);
  assert.ok(events[0].position.commit > events[1].position.commit);
});

await check("a soft-deleted stream reads as not found; a tombstoned one as deleted", async () => {
  await client.deleteStream(stream);
  await assert.rejects(collect(client.readStream(stream)), (error) => error instanceof StreamNotFoundError);
  const gone = `gone-${run}`;
  await client.appendToStream(gone, jsonEvent({ type: "X", data: {} }));
  await client.tombstoneStream(gone);
  await assert.rejects(collect(client.readStream(gone)), (error) => error instanceof StreamDeletedError);
  await assert.rejects(client.appendToStream(gone, jsonEvent({ type: "X", data: {} })), (error) => error instanceof StreamDeletedError);
});

await check("a tombstoned stream's read fails before any event, naming the stream, in both directions", async () => {
  // EventStoreDB answers the call with the error and no message; the client
  // reads the stream's name from the error's metadata.
  const gone = `tombstoned-${run}`;
  await client.appendToStream(gone, [jsonEvent({ type: "X", data: {} }), jsonEvent({ type: "Y", data: {} })]);
  await client.tombstoneStream(gone);
  for (const options of [{ direction: FORWARDS, fromRevision: START }, { direction: BACKWARDS, fromRevision: END }]) {
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const resolved of client.readStream(gone, options)) seen.push(resolved);
      })(),
      (error) => error instanceof StreamDeletedError && error.streamName === gone,
    );
    assert.deepEqual(seen, [], `no event before the error (${options.direction})`);
  }
});

await check("a stream read to its end yields exactly its events", async () => {
  const target = `ends-${run}`;
  await client.appendToStream(target, [1, 2, 3].map((n) => jsonEvent({ type: "N", data: { n } })));
  const events = await collect(client.readStream(target, { fromRevision: START, maxCount: 100 }));
  assert.deepEqual(events.map((e) => e.data.n), [1, 2, 3]);
  const past = await collect(client.readStream(target, { fromRevision: 10n, maxCount: 100 }));
  assert.deepEqual(past, []);
});

await check("$maxCount in stream metadata leaves only the latest events to stream reads", async () => {
  const target = `capped-${run}`;
  await client.appendToStream(target, [1, 2, 3, 4].map((n) => jsonEvent({ type: "N", data: { n } })));
  await client.setStreamMetadata(target, { maxCount: 2 });
  const forwards = await collect(client.readStream(target, { fromRevision: START, maxCount: 100 }));
  assert.deepEqual(forwards.map((e) => e.data.n), [3, 4]);
  const backwards = await collect(client.readStream(target, { fromRevision: END, direction: BACKWARDS, maxCount: 100 }));
  assert.deepEqual(backwards.map((e) => e.data.n), [4, 3]);
  assert.equal((await client.getStreamMetadata(target)).metadata.maxCount, 2);
  // A later document replaces the whole of it: an hour's $maxAge (in seconds) hides nothing here.
  await client.setStreamMetadata(target, { maxAge: 3600 });
  const all = await collect(client.readStream(target, { fromRevision: START, maxCount: 100 }));
  assert.deepEqual(all.map((e) => e.data.n), [1, 2, 3, 4]);
});

await check("a filtered $all subscription catches up, then receives live events", async () => {
  const prefix = `live-${run}-`;
  await client.appendToStream(`${prefix}1`, jsonEvent({ type: "Before", data: { n: 1 } }));
  const subscription = client.subscribeToAll({ fromPosition: START, filter: streamNameFilter({ prefixes: [prefix] }) });
  const seen = [];
  let caughtUp = false;
  let liveAppend;
  subscription.on("caughtUp", () => {
    caughtUp = true;
    liveAppend = client.appendToStream(`${prefix}2`, jsonEvent({ type: "After", data: { n: 2 } }));
  });
  for await (const resolved of subscription) {
    seen.push(resolved.event.data.n);
    if (seen.length === 2) break;
  }
  await subscription.unsubscribe();
  // The event can reach the subscriber before the append's own answer.
  await liveAppend;
  assert.ok(caughtUp, "caughtUp was emitted");
  assert.deepEqual(seen, [1, 2]);
});

const secured = `secured-${run}`;
if (refusedConnections.length > 0) await client.appendToStream(secured, jsonEvent({ type: "Owned", data: {} }));
for (const [index, refused] of refusedConnections.entries()) {
  const who = index === 0 ? "without credentials" : "with a wrong password";
  const intruder = EventStoreDBClient.connectionString(refused);
  await check(`reads ${who} are refused with AccessDeniedError`, async () => {
    await assert.rejects(collect(intruder.readStream(secured, { maxCount: 10 })), AccessDeniedError);
    await assert.rejects(collect(intruder.readAll({ maxCount: 10 })), AccessDeniedError);
  });
  await check(`a forged append ${who} is refused with AccessDeniedError and changes nothing`, async () => {
    const before = await collect(client.readStream(secured, { maxCount: 100 }));
    await assert.rejects(
      intruder.appendToStream(secured, jsonEvent({ type: "Forged", data: { userId: "attacker" } })),
      AccessDeniedError,
    );
    const after = await collect(client.readStream(secured, { maxCount: 100 }));
    assert.equal(after.length, before.length);
  });
  await intruder.dispose();
}

await client.dispose();
console.log("all checks passed");
