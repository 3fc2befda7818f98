// What a projection is: its description and how one event changes its documents.

import type { Event } from './event.js';
import type { ReadModel } from './model.js';

/** What a projection is and which events it receives. */
export interface Description {
  /** The projection's name, e.g. `user-directory`. */
  name: string;
  /** The version of its logic, shown in status. */
  version: string;
  /** Receive events whose type is exactly one of these. */
  eventTypes?: string[];
  /** Receive events whose type starts with one of these. With no type filter at all, every type. */
  eventTypePrefixes?: string[];
  /** Receive events from streams whose name starts with one of these (every stream if none). */
  streams?: string[];
  /** Secondary indexes: [collection, dotted field path]. */
  indexes?: [collection: string, field: string][];
}

/**
 * A projection: its description and `apply`, which changes the read model
 * for one event. It keeps no state between events other than the read
 * model. Throwing fails the event (and the batch's writes are discarded).
 *
 * Projections are deterministic: the same events must give the same
 * documents. Use `event.createdMs` for time; `Date.now()` and
 * `Math.random()` mean nothing in a deployed module (the clock is frozen at
 * build time and the random sequence repeats), and the SDK makes them throw.
 */
export interface Projection extends Description {
  apply(event: Event, model: ReadModel): void;
}

/** Declares a projection (a typed identity: `export default defineProjection({...})`). */
export function defineProjection(projection: Projection): Projection {
  return projection;
}

/** Whether `projection` receives an event of this stream and type (system `$` types never). */
export function wants(projection: Description, streamId: string, eventType: string): boolean {
  return !eventType.startsWith('$') && wantsType(projection, eventType) && wantsStream(projection, streamId);
}

/** Whether the type filters accept `eventType`. */
export function wantsType(projection: Description, eventType: string): boolean {
  const types = projection.eventTypes ?? [];
  const prefixes = projection.eventTypePrefixes ?? [];
  return (
    (types.length === 0 && prefixes.length === 0) ||
    types.includes(eventType) ||
    prefixes.some((p) => eventType.startsWith(p))
  );
}

/** Whether the stream filter accepts `streamId`. */
export function wantsStream(projection: Description, streamId: string): boolean {
  const streams = projection.streams ?? [];
  return streams.length === 0 || streams.some((p) => streamId.startsWith(p));
}
