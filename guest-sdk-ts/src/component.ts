/// <reference path="./wit/projection.d.ts" />
// The glue between the WIT world (`wit/projection.wit`) and a `Projection`,
// for a module built with componentize-js. Only a module's build entry
// imports this file; tests use the harness instead.

import { get, put, delete as remove } from 'projector:projection/read-model@0.2.0';
import { write } from 'projector:projection/log@0.2.0';
import type * as wit from 'projector:projection/types@0.2.0';
import type { WriteError } from 'projector:projection/read-model@0.2.0';

import { forbidClockAndRandomness } from './determinism.js';
import { toHandleError } from './errors.js';
import { Event } from './event.js';
import { setLogWriter } from './log.js';
import { ReadModel, type Backend } from './model.js';
import type { Projection } from './projection.js';
import type { WriteRefusal } from './rules.js';

/** The host's read model, through the imports. */
const host: Backend = {
  get: (collection, key) => get(collection, key),
  put(collection, key, json) {
    try {
      put(collection, key, json);
      return undefined;
    } catch (e) {
      // A `result` error comes back as an exception carrying the WIT error.
      const refused = (e as { payload?: WriteError }).payload;
      if (!refused) throw e;
      return toRefusal(refused);
    }
  },
  delete: (collection, key) => remove(collection, key),
};

function toRefusal(error: WriteError): WriteRefusal {
  switch (error.tag) {
    case 'too-large':
      return { kind: 'too-large', limit: Number(error.val) };
    case 'invalid-json':
      return { kind: 'invalid-json', message: error.val };
    case 'invalid-name':
      return { kind: 'invalid-name', message: error.val };
  }
}

/** The module's exports for `projection`: `describe` and `handleBatch`. */
export function exportProjection(projection: Projection) {
  setLogWriter((level, message) => write(level, message));
  forbidClockAndRandomness();
  const model = new ReadModel(host);
  return {
    describe(): wit.Description {
      return {
        name: projection.name,
        version: projection.version,
        eventTypes: projection.eventTypes ?? [],
        eventTypePrefixes: projection.eventTypePrefixes ?? [],
        streamPrefixes: projection.streams ?? [],
        indexes: (projection.indexes ?? []).map(([collection, field]) => ({ collection, field })),
      };
    },
    handleBatch(events: wit.Event[]): void {
      for (let eventIndex = 0; eventIndex < events.length; eventIndex++) {
        try {
          projection.apply(toEvent(events[eventIndex]), model);
        } catch (thrown) {
          // componentize-js returns a thrown error's `payload` as the `err` of the result.
          const failed = new Error('the batch failed') as Error & { payload: wit.BatchError };
          failed.payload = { eventIndex, error: toHandleError(thrown) };
          throw failed;
        }
      }
    },
  };
}

function toEvent(e: wit.Event): Event {
  return new Event({
    streamId: e.streamId,
    eventType: e.eventType,
    eventId: e.eventId,
    streamRevision: Number(e.streamRevision),
    commitPosition: Number(e.commitPosition),
    createdMs: Number(e.createdMs),
    contentType: e.contentType,
    data: e.data,
    metadata: e.metadata,
  });
}
