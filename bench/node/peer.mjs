// The peer design the source articles describe: the official Node.js client
// subscribes to $all from the start and applies the user-directory logic
// (one document per user plus an email lookup) to in-memory Maps. Nothing
// is durable: a restart starts from the first event again.
//
// Usage: node peer.mjs <connection string> <events to apply>
// Prints one JSON line: {"events", "seconds", "users"}; the clock starts when
// the subscription is requested and stops at the last expected event.
import { EventStoreDBClient, START, streamNameFilter } from "@eventstore/db-client";

const [connectionString, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
if (!connectionString || !Number.isInteger(expected) || expected <= 0) {
  console.error("usage: node peer.mjs <connection string> <events to apply>");
  process.exit(2);
}

const client = EventStoreDBClient.connectionString(connectionString);
const users = new Map();
const emails = new Map();

function apply(event) {
  if (event.type !== "UserRegistered") return;
  const data = event.data;
  const user = {
    id: data.userId,
    email: data.email,
    username: data.username,
    // Version 1 events have no registeredAt: the stored time stands in.
    registeredAt: data.registeredAt ?? event.created.toISOString(),
  };
  emails.set(user.email.toLowerCase(), { userId: user.id });
  users.set(user.id, user);
}

const started = process.hrtime.bigint();
const subscription = client.subscribeToAll({
  fromPosition: START,
  filter: streamNameFilter({ prefixes: ["user-"] }),
});
let applied = 0;
for await (const resolved of subscription) {
  if (!resolved.event) continue;
  apply(resolved.event);
  applied += 1;
  if (applied === expected) break;
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await subscription.unsubscribe();
await client.dispose();
console.log(JSON.stringify({ events: applied, seconds, users: users.size }));
