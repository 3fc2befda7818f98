// The harness applies the host's rules: whole batches or nothing, the same
// write refusals, strict delivery, every throw mapped to a handle-error.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { defineProjection, log, rules, type Projection } from '../src/index.js';
import { BatchError, Harness, TestEvent } from '../src/testing.js';

const orders = defineProjection({
  name: 'orders',
  version: '1.0.0',
  eventTypes: ['OrderPlaced'],
  streams: ['order-'],
  apply(event, model) {
    const order = event.json<{ total?: number; fail?: string }>();
    if (order.fail === 'throw-string') throw 'plain string';
    if (order.fail === 'throw-object') throw { code: 7 };
    if (order.fail === 'type-error') (undefined as unknown as { x: number }).x;
    model.put('orders', event.streamId, { total: order.total, position: event.commitPosition });
    model.update('totals', 'all', () => ({ count: 0 }), (t) => ({ count: t.count + 1 }));
    log.info(`placed ${event.streamId}`);
  },
});

const placed = (stream: string, body: Record<string, unknown> = { total: 1 }) =>
  TestEvent.json('OrderPlaced', body).stream(stream);

function refusal(harness: Harness, events: TestEvent[]): BatchError {
  try {
    harness.given(events);
  } catch (e) {
    assert.ok(e instanceof BatchError, `a BatchError, got ${e}`);
    return e;
  }
  assert.fail('the batch was applied');
}

test('documents come from events and positions count every event given', () => {
  const harness = new Harness(orders);
  harness.given([placed('order-1', { total: 5 }), placed('order-2', { total: 7 })]);
  assert.deepEqual(harness.document('orders', 'order-2'), { total: 7, position: 2 });
  assert.deepEqual(harness.document('totals', 'all'), { count: 2 });
  assert.deepEqual(harness.collections(), ['orders', 'totals']);
  assert.deepEqual(harness.takeLogs(), [
    ['info', 'placed order-1'],
    ['info', 'placed order-2'],
  ]);
});

test("a failing event discards the batch's writes; its events keep their positions, as in the store", () => {
  const harness = new Harness(orders);
  harness.given([placed('order-1')]);
  const error = refusal(harness, [placed('order-2'), TestEvent.raw('OrderPlaced', '{not json').stream('order-3')]);
  assert.equal(error.eventIndex, 1);
  assert.equal(error.error.tag, 'invalid-event');
  assert.match(error.error.val, /^OrderPlaced order-3@0: /);
  assert.equal(harness.document('orders', 'order-2'), undefined, 'the earlier write is gone');
  assert.deepEqual(harness.document('totals', 'all'), { count: 1 });
  harness.given([placed('order-4')]);
  assert.equal((harness.document('orders', 'order-4') as { position: number }).position, 4);
});

test('every throw becomes a handle-error with its message, never a bare failure', () => {
  const harness = new Harness(orders);
  const cases: [string, string][] = [
    ['throw-string', 'threw "plain string"'],
    ['throw-object', 'threw {"code":7}'],
    ['type-error', "TypeError: Cannot read properties of undefined (reading 'x')"],
  ];
  for (const [fail, message] of cases) {
    const error = refusal(harness, [placed('order-1', { fail })]);
    assert.deepEqual(error.error, { tag: 'other', val: message });
  }
});

test('writes the host refuses are refused the same way', () => {
  const writer = (document: unknown, collection = 'c', key = 'k'): Projection =>
    defineProjection({ name: 'w', version: '1', apply: (_e, model) => model.put(collection, key, document) });
  const refusedWith = (projection: Projection) => {
    const error = refusal(new Harness(projection), [TestEvent.json('Any', {})]);
    assert.equal(error.error.tag, 'read-model');
    return error.error.val;
  };
  const deep = JSON.parse('['.repeat(129) + ']'.repeat(129));
  assert.match(refusedWith(writer(deep)), /nest deeper than 128/);
  assert.doesNotThrow(() => new Harness(writer(JSON.parse('['.repeat(128) + ']'.repeat(128)))).given([TestEvent.json('Any', {})]));
  assert.match(refusedWith(writer('x'.repeat(rules.MAX_DOCUMENT_BYTES))), /larger than the limit of 1048576 bytes/);
  assert.match(refusedWith(writer('\ud800 alone')), /lone UTF-16 surrogate/);
  assert.doesNotThrow(() => new Harness(writer('\ud83d\ude00 \\ud800 is text')).given([TestEvent.json('Any', {})]));
  assert.match(refusedWith(writer(undefined)), /cannot be written as JSON/);
  assert.match(refusedWith(writer(10n)), /cannot be written as JSON/);
  assert.match(refusedWith(writer({}, '', 'k')), /collection must be 1-256 bytes and key 1-1024 bytes/);
  assert.match(refusedWith(writer({}, 'c', 'é'.repeat(513))), /key 1-1024 bytes/, 'names are counted in UTF-8 bytes');
  assert.match(refusedWith(writer({ a: 1 }, 'c'.repeat(257), 'k')), /invalid collection or key/);
});

test('an event the projection would never receive fails the batch and says why', () => {
  const harness = new Harness(orders);
  let error = refusal(harness, [placed('order-1'), TestEvent.json('OrderPlaced', {})]);
  assert.equal(error.eventIndex, 1);
  assert.equal(
    error.error.val,
    'event 1 (stream `test`, type `OrderPlaced`) would never reach `orders`: its stream matches none of the ' +
      'stream prefixes ["order-"] (`test` is the default: set one with `.stream(...)`); give it a stream and type ' +
      'the projection wants, or mark it `.expectIgnored()` to test that it is ignored',
  );
  error = refusal(harness, [TestEvent.json('OrderPlacedTwice', {}).stream('order-1')]);
  assert.match(error.error.val, /its type is not one the projection asks for \(event types \["OrderPlaced"\]\)/);
  error = refusal(harness, [placed('order-1').expectIgnored()]);
  assert.match(error.error.val, /is marked `expectIgnored` but `orders` wants it/);
  harness.given([placed('audit-1').expectIgnored(), placed('order-1')]);
  assert.deepEqual(harness.collection('orders'), { 'order-1': { total: 1, position: 2 } });
});

test('the clock and randomness throw while a projection runs, and come back after', () => {
  const clock = defineProjection({ name: 'clock', version: '1', apply: () => void Date.now() });
  const random = defineProjection({ name: 'random', version: '1', apply: () => void Math.random() });
  const now = defineProjection({ name: 'now', version: '1', apply: () => void new Date() });
  for (const projection of [clock, random, now]) {
    const error = refusal(new Harness(projection), [TestEvent.json('Any', {})]);
    assert.match(error.error.val, /is not available in a projection/);
  }
  const dated = defineProjection({
    name: 'dated',
    version: '1',
    apply: (event, model) => model.put('at', 'k', event.createdRfc3339()),
  });
  const harness = new Harness(dated);
  harness.given([TestEvent.json('Any', {}).createdMs(Date.UTC(2026, 10, 23, 12))]);
  assert.equal(harness.document('at', 'k'), '2026-11-23T12:00:00.000Z');
  assert.ok(Date.now() > 0 && Math.random() < 1, 'restored');
});
