// The built module (dist/, what is deployed) against the source, under the
// same harness: the same events give the same documents and the same errors.
// Run by `npm run test:built`, which builds first.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { loadComponent } from '@projector/guest-sdk/component-harness';
import { BatchError, Harness, TestEvent } from '@projector/guest-sdk/testing';
import userDirectory from '../src/projection.js';

const events = () => [
  TestEvent.json('UserRegistered', {
    userId: 'u1',
    email: 'Ada@Example.com',
    username: 'ada',
    passwordHash: '$argon2id$x',
    registeredAt: '2026-11-23T10:00:00Z',
  })
    .stream('user-u1')
    .schemaVersion(2),
  TestEvent.json('UserRegistered', { userId: 'u0', email: 'old@example.org', username: 'old', passwordHash: 'h' })
    .stream('user-u0')
    .createdMs(1_795_435_200_000),
  TestEvent.json('UserRenamed', {}).stream('user-u1').expectIgnored(),
];

test('the built module describes itself as the source does', async () => {
  const built = await loadComponent('dist/user_directory_ts.wasm');
  built.given([]);
  assert.deepEqual(built.collections(), []);
});

test('the built module writes what the source writes', async () => {
  const built = await loadComponent('dist/user_directory_ts.wasm');
  const source = new Harness(userDirectory);
  built.given(events());
  source.given(events());
  for (const collection of ['users', 'emails']) {
    assert.deepEqual(built.collection(collection), source.collection(collection), collection);
  }
  assert.equal((built.document('users', 'u0') as { registeredAt: string }).registeredAt, '2026-11-23T12:00:00.000Z');
});

test('the built module fails where the source fails, with the same error, keeping nothing', async () => {
  const built = await loadComponent('dist/user_directory_ts.wasm');
  const broken = () => [
    ...events().slice(0, 1),
    TestEvent.raw('UserRegistered', '{not json').stream('user-u9').schemaVersion(2),
  ];
  const failure = (harness: Harness) => {
    try {
      harness.given(broken());
    } catch (e) {
      assert.ok(e instanceof BatchError, `${e}`);
      // The JSON parser's own words differ (SpiderMonkey in the module, V8 in Node).
      return [e.eventIndex, e.error.tag, e.error.val.split(': ')[0]];
    }
    assert.fail('applied');
  };
  const fromBuilt = failure(built);
  assert.deepEqual(fromBuilt, [1, 'invalid-event', 'UserRegistered user-u9@0']);
  assert.deepEqual(failure(new Harness(userDirectory)), fromBuilt);
  assert.deepEqual(built.collections(), []);
});
