// One event as a projection sees it, with JSON, schema-version and
// upcasting helpers.

import { InvalidEvent } from './errors.js';
import { messageOf } from './rules.js';

/** Anything that checks an unknown value and returns it typed, e.g. a zod schema. */
export interface Schema<T> {
  parse(value: unknown): T;
}

/**
 * An event type and how to read each schema version of it still in the
 * store, each version's schema turning its payload into the current shape
 * (with zod: `V1.transform(upcast)`). The version travels in the metadata
 * as `schemaVersion` (absent means 1).
 */
export interface EventType<T> {
  readonly type: string;
  readonly versions: Readonly<Record<number, Schema<T>>>;
}

/** Defines an event type: its stored name and a schema per version. */
export function eventType<T>(type: string, versions: Record<number, Schema<T>>): EventType<T> {
  return { type, versions };
}

/** The fields of an event, as the host delivers them. */
export interface EventFields {
  streamId: string;
  eventType: string;
  eventId: string;
  streamRevision: number;
  commitPosition: number;
  createdMs: number;
  contentType: string;
  data: Uint8Array;
  metadata: Uint8Array;
}

const decoder = new TextDecoder();

/** One event from the store. */
export class Event implements EventFields {
  /** The stream, e.g. `user-42`. */
  readonly streamId: string;
  /** The event type, e.g. `UserRegistered`. */
  readonly eventType: string;
  /** The event id (a UUID). */
  readonly eventId: string;
  /** Its number in its stream, from 0. */
  readonly streamRevision: number;
  /** Its commit position in `$all` (pass it as `at_least` to read your writes). */
  readonly commitPosition: number;
  /** When the store accepted it, in milliseconds since the epoch: the projection's only clock. */
  readonly createdMs: number;
  /** The content type, e.g. `application/json`. */
  readonly contentType: string;
  /** The payload. */
  readonly data: Uint8Array;
  /** The metadata (JSON by convention; may be empty). */
  readonly metadata: Uint8Array;

  constructor(fields: EventFields) {
    this.streamId = fields.streamId;
    this.eventType = fields.eventType;
    this.eventId = fields.eventId;
    this.streamRevision = fields.streamRevision;
    this.commitPosition = fields.commitPosition;
    this.createdMs = fields.createdMs;
    this.contentType = fields.contentType;
    this.data = fields.data;
    this.metadata = fields.metadata;
  }

  /** The payload parsed as JSON; an `InvalidEvent` when it is not JSON. */
  json<T = unknown>(): T {
    try {
      return JSON.parse(decoder.decode(this.data)) as T;
    } catch (e) {
      throw new InvalidEvent(`${this.eventType} ${this.streamId}@${this.streamRevision}: ${messageOf(e)}`);
    }
  }

  /** The metadata parsed as JSON (an empty object when there is none). */
  metadataJson<T = Record<string, unknown>>(): T {
    if (this.metadata.length === 0) return {} as T;
    try {
      return JSON.parse(decoder.decode(this.metadata)) as T;
    } catch (e) {
      throw new InvalidEvent(`metadata: ${messageOf(e)}`);
    }
  }

  /**
   * The schema version in the metadata (`schemaVersion`), 1 when absent
   * (or when the metadata is not a JSON object), as the Rust SDK reads it.
   */
  schemaVersion(): number {
    const metadata: unknown = this.metadataJson();
    const version =
      typeof metadata === 'object' && metadata !== null && !Array.isArray(metadata)
        ? (metadata as { schemaVersion?: unknown }).schemaVersion
        : undefined;
    if (version === undefined) return 1;
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 0 || version > 0xffffffff) {
      throw new InvalidEvent(`schemaVersion ${JSON.stringify(version)} is not a version number`);
    }
    return version;
  }

  /**
   * The payload as `type`'s current shape, read with the schema of the
   * event's own version; `undefined` when the event is of another type. An
   * unknown version or a payload its schema refuses is an `InvalidEvent`.
   */
  decode<T>(type: EventType<T>): T | undefined {
    if (this.eventType !== type.type) return undefined;
    const version = this.schemaVersion();
    const schema = type.versions[version];
    if (!schema) {
      const known = Object.keys(type.versions).join(', ');
      throw new InvalidEvent(`${type.type} schema version ${version} is unknown (known: ${known})`);
    }
    const payload = this.json();
    try {
      return schema.parse(payload);
    } catch (e) {
      throw new InvalidEvent(`${type.type} v${version} ${this.streamId}@${this.streamRevision}: ${messageOf(e)}`);
    }
  }

  /** When the store accepted it, as RFC 3339 with milliseconds (`2026-11-23T12:00:00.000Z`). */
  createdRfc3339(): string {
    return new Date(this.createdMs).toISOString();
  }
}
