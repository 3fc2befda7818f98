// What the Node.js scripts share: the client from the command line, named
// checks, and waits. A wait is for an outcome (a promise settling, a state
// the server reports), bounded by a deadline so that a missing outcome fails
// with a message instead of hanging; nothing sleeps for a fixed time to let
// something happen.
import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { EventStoreDBClient, jsonEvent } from "@eventstore/db-client";

/** How long any one wait may take before the check fails. */
export const WAIT_MS = 10_000;
/** How often `waitFor` asks again. */
export const POLL_MS = 20;

/** The client for the connection string in the first argument; exits 2 with `usage` without one. */
export function connect(usage) {
  const connectionString = process.argv[2];
  if (!connectionString) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return EventStoreDBClient.connectionString(connectionString);
}

/** Runs `body`, printing "ok <name>"; on a failure prints it and exits 1. */
export async function check(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (error) {
    console.error(`FAIL ${name}\n`, error);
    process.exit(1);
  }
}

/** The events of a read, in order. */
export async function collect(read) {
  const events = [];
  for await (const resolved of read) events.push(resolved.event);
  return events;
}

/** `promise`, or a failure naming `what` after `ms`. */
export async function within(what, promise, ms = WAIT_MS) {
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

/**
 * Asks `predicate` every POLL_MS until it returns a truthy value, which is
 * returned; fails naming `what` after `ms`.
 */
export async function waitFor(what, predicate, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await predicate();
    if (last) return last;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(POLL_MS);
  }
}

/** Events `from` to `to` (excluded), each with a fresh id and its number as `data.n`. */
export function numbered(from, to, type = "N") {
  return Array.from({ length: to - from }, (_, i) => jsonEvent({ id: randomUUID(), type, data: { n: from + i } }));
}

/** The numbers of persistent subscription deliveries. */
export const ns = (deliveries) => deliveries.map((d) => d.event.data.n);

/**
 * A consumer of a persistent subscription, its deliveries queued in arrival
 * order. `next()` is the next delivery (a ResolvedEvent with `retryCount`);
 * `confirmed` settles when the server confirms the subscription (or fails
 * it); `ended` resolves with the error that ended the subscription.
 */
export function consume(subscription) {
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
      let waiter;
      const delivery = new Promise((resolve, reject) => waiting.push((waiter = { resolve, reject })));
      // Timed out, it leaves the queue: a later delivery goes to the next `next`.
      return within(what, delivery).finally(() => {
        const index = waiting.indexOf(waiter);
        if (index >= 0) waiting.splice(index, 1);
      });
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
