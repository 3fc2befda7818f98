// Typed decoding with zod schemas, upcasting by schema version, and the
// errors for what cannot be read.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';

import { defineProjection, Event, eventType, InvalidEvent } from '../src/index.js';
import { BatchError, Harness, TestEvent } from '../src/testing.js';

const V1 = z.object({ userId: z.string(), email: z.string() });
const V2 = V1.extend({ registeredAt: z.string() });
type Registered = z.infer<typeof V1> & { registeredAt?: string };

const UserRegistered = eventType<Registered>('UserRegistered', { 1: V1, 2: V2 });

const directory = defineProjection({
  name: 'directory',
  version: '1.0.0',
  eventTypes: [UserRegistered.type],
  apply(event, model) {
    const user = event.decode(UserRegistered);
    if (!user) return;
    model.put('users', user.userId, { ...user, registeredAt: user.registeredAt ?? event.createdRfc3339() });
  },
});

test('each schema version is read with its own schema', () => {
  const harness = new Harness(directory);
  harness.given([
    TestEvent.json('UserRegistered', { userId: 'u1', email: 'a@x' }).createdMs(Date.UTC(2026, 0, 2)),
    TestEvent.json('UserRegistered', { userId: 'u2', email: 'b@x', registeredAt: '2026-11-23T10:00:00Z' }).schemaVersion(2),
  ]);
  assert.deepEqual(harness.document('users', 'u1'), {
    userId: 'u1',
    email: 'a@x',
    registeredAt: '2026-01-02T00:00:00.000Z',
  });
  assert.equal((harness.document('users', 'u2') as Registered).registeredAt, '2026-11-23T10:00:00Z');
});

test('a payload its version refuses, or an unknown version, is an invalid event', () => {
  const harness = new Harness(directory);
  const attempt = (event: TestEvent) => {
    try {
      harness.given([event]);
    } catch (e) {
      assert.ok(e instanceof BatchError);
      assert.equal(e.error.tag, 'invalid-event');
      return e.error.val;
    }
    assert.fail('applied');
  };
  assert.match(attempt(TestEvent.json('UserRegistered', { userId: 'u1', email: 'a@x' }).schemaVersion(2)), /UserRegistered v2 test@0: .*registeredAt/s);
  assert.match(attempt(TestEvent.json('UserRegistered', { userId: 'u1', email: 'a@x' }).schemaVersion(3)), /schema version 3 is unknown \(known: 1, 2\)/);
  assert.match(attempt(TestEvent.json('UserRegistered', {}).metadata({ schemaVersion: 'two' })), /schemaVersion "two" is not a version number/);
});

test('decode gives nothing for another type', () => {
  const other = defineProjection({
    name: 'other',
    version: '1',
    apply(event) {
      assert.equal(event.decode(UserRegistered), undefined);
      throw new InvalidEvent('checked');
    },
  });
  assert.throws(() => new Harness(other).given([TestEvent.json('Something', {})]), /invalid event: checked/);
});

test('the schema version is read as the Rust SDK reads it', () => {
  const withMetadata = (metadata: string) =>
    new Event({
      streamId: 's',
      eventType: 'T',
      eventId: 'id',
      streamRevision: 0,
      commitPosition: 1,
      createdMs: 0,
      contentType: 'application/json',
      data: new TextEncoder().encode('{}'),
      metadata: new TextEncoder().encode(metadata),
    });
  assert.equal(withMetadata('').schemaVersion(), 1);
  assert.equal(withMetadata('null').schemaVersion(), 1, 'metadata that is not an object has no version');
  assert.equal(withMetadata('[2]').schemaVersion(), 1);
  assert.equal(withMetadata('{"schemaVersion": 0}').schemaVersion(), 0);
  assert.throws(() => withMetadata('{"schemaVersion": -1}').schemaVersion(), /schemaVersion -1 is not a version number/);
  assert.throws(() => withMetadata('{"schemaVersion": 1.5}').schemaVersion(), InvalidEvent);
});
