import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BatchError, Harness, TestEvent } from '@projector/guest-sdk/testing';
import userDirectory from '../src/projection.js';

const v2 = (id: string, email: string) =>
  TestEvent.json('UserRegistered', {
    userId: id,
    email,
    username: `name-${id}`,
    passwordHash: '$argon2id$v=19$secret',
    registeredAt: '2026-11-23T10:00:00Z',
  })
    .stream(`user-${id}`)
    .schemaVersion(2);

test('a registration makes a user document and an email entry without the hash', () => {
  const harness = new Harness(userDirectory);
  harness.given([v2('u1', 'Ada@Example.com')]);
  assert.deepEqual(harness.document('users', 'u1'), {
    id: 'u1',
    email: 'Ada@Example.com',
    username: 'name-u1',
    registeredAt: '2026-11-23T10:00:00Z',
  });
  assert.deepEqual(harness.document('emails', 'ada@example.com'), { userId: 'u1' });
  assert.ok(!JSON.stringify(harness.collection('users')).includes('argon2'), 'no password hash in the read model');
});

test('version 1 events are upcast and use the stored time', () => {
  const harness = new Harness(userDirectory);
  const v1 = TestEvent.json('UserRegistered', {
    userId: 'u0',
    email: 'old@example.com',
    username: 'oldtimer',
    passwordHash: '$argon2id$x',
  })
    .stream('user-u0')
    .createdMs(1_795_435_200_000);
  harness.given([v1]);
  assert.equal((harness.document('users', 'u0') as { registeredAt: string }).registeredAt, '2026-11-23T12:00:00.000Z');
});

test('events it did not ask for never reach it', () => {
  const harness = new Harness(userDirectory);
  harness.given([
    v2('u2', 'x@example.com').stream('audit-1').expectIgnored(),
    TestEvent.json('UserRenamed', {}).stream('user-u3').expectIgnored(),
  ]);
  assert.deepEqual(harness.collections(), []);
});

test('a malformed registration fails the whole batch', () => {
  const harness = new Harness(userDirectory);
  const broken = TestEvent.raw('UserRegistered', '{not json').stream('user-u9').schemaVersion(2);
  assert.throws(
    () => harness.given([v2('u1', 'a@example.com'), broken]),
    (e: unknown) => e instanceof BatchError && e.eventIndex === 1 && e.error.tag === 'invalid-event',
  );
  assert.deepEqual(harness.collections(), [], "the batch's earlier write is discarded too");
});

test('a version 2 event without registeredAt, or with a field it does not know, is refused', () => {
  const harness = new Harness(userDirectory);
  const missing = TestEvent.json('UserRegistered', { userId: 'u1', email: 'a@x', username: 'a', passwordHash: 'h' })
    .stream('user-u1')
    .schemaVersion(2);
  const extra = TestEvent.json('UserRegistered', { userId: 'u1', email: 'a@x', username: 'a', passwordHash: 'h', nickname: 'z' })
    .stream('user-u1');
  for (const event of [missing, extra]) {
    assert.throws(() => harness.given([event]), (e: unknown) => e instanceof BatchError && e.error.tag === 'invalid-event');
  }
});
