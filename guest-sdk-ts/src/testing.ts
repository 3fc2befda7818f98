// Tests for projections, run natively in Node: events in, documents out,
// with the host's rules. A batch is applied whole or not at all, a write
// the host would refuse is refused here with the same error, and an event
// the projection would never receive fails the batch unless it is marked
// `expectIgnored()`.

import { forbidClockAndRandomness } from './determinism.js';
import { handleErrorMessage, toHandleError, type HandleError } from './errors.js';
import { Event } from './event.js';
import { setLogWriter, type Level } from './log.js';
import { ReadModel, type Backend } from './model.js';
import { wants, wantsStream, wantsType, type Projection } from './projection.js';
import { checkName, checkPut, MAX_DOCUMENT_BYTES } from './rules.js';

const encoder = new TextEncoder();

/** An event to give the harness, built step by step. */
export class TestEvent {
  #stream: string | undefined;
  #metadata: Record<string, unknown> | undefined;
  #createdMs: number | undefined;
  #expectIgnored = false;

  private constructor(
    readonly eventType: string,
    readonly data: Uint8Array,
  ) {}

  /** An event whose payload is `data` as JSON. */
  static json(eventType: string, data: unknown): TestEvent {
    return new TestEvent(eventType, encoder.encode(JSON.stringify(data)));
  }

  /** An event whose payload is these bytes or this text, as they are (e.g. not JSON). */
  static raw(eventType: string, data: Uint8Array | string): TestEvent {
    return new TestEvent(eventType, typeof data === 'string' ? encoder.encode(data) : data);
  }

  /** Its stream (default `test`). */
  stream(streamId: string): this {
    this.#stream = streamId;
    return this;
  }

  /** Its schema version, written to the metadata as `schemaVersion`. */
  schemaVersion(version: number): this {
    this.#metadata = { ...this.#metadata, schemaVersion: version };
    return this;
  }

  /** Its metadata, as JSON. */
  metadata(metadata: Record<string, unknown>): this {
    this.#metadata = { ...this.#metadata, ...metadata };
    return this;
  }

  /** When the store accepted it (default: a fixed time, 2026-01-01, plus its position in seconds). */
  createdMs(ms: number): this {
    this.#createdMs = ms;
    return this;
  }

  /** Says the projection must not receive it (a test that it is ignored). */
  expectIgnored(): this {
    this.#expectIgnored = true;
    return this;
  }

  get streamId(): string {
    return this.#stream ?? 'test';
  }

  get isExpectedIgnored(): boolean {
    return this.#expectIgnored;
  }

  get hasDefaultStream(): boolean {
    return this.#stream === undefined;
  }

  /** The event as the store would deliver it at `position`, `revision`. */
  toEvent(position: number, revision: number): Event {
    const id = position.toString(16).padStart(12, '0');
    return new Event({
      streamId: this.streamId,
      eventType: this.eventType,
      eventId: `00000000-0000-4000-8000-${id}`,
      streamRevision: revision,
      commitPosition: position,
      createdMs: this.#createdMs ?? Date.UTC(2026, 0, 1) + position * 1000,
      contentType: 'application/json',
      data: this.data,
      metadata: this.#metadata ? encoder.encode(JSON.stringify(this.#metadata)) : new Uint8Array(),
    });
  }
}

/** A failed batch: which event (counting every event given) and why. Nothing of it is kept. */
export class BatchError extends Error {
  constructor(
    readonly eventIndex: number,
    readonly error: HandleError,
  ) {
    super(`event ${eventIndex}: ${handleErrorMessage(error)}`);
    this.name = 'BatchError';
  }
}

type Documents = Map<string, Map<string, string>>;

/** Runs a projection over events given in batches, with an in-memory read model. */
export class Harness {
  readonly #projection: Projection;
  readonly #documents: Documents = new Map();
  readonly #revisions = new Map<string, number>();
  readonly #documentLimit: number;
  #position = 0;
  #logs: [Level, string][] = [];

  constructor(projection: Projection, options: { documentBytes?: number } = {}) {
    this.#projection = projection;
    this.#documentLimit = options.documentBytes ?? MAX_DOCUMENT_BYTES;
  }

  /**
   * Applies `events` as one batch, as the host would: each event the
   * projection wants, in order. Throws a `BatchError` and keeps none of the
   * batch's writes when one fails; its events keep their positions and
   * revisions, as events in the store do. An event that would never reach
   * the projection, or one marked `expectIgnored` that would, fails the
   * batch before anything runs, and then it takes no positions either.
   */
  given(events: TestEvent[]): void {
    events.forEach((test, index) => {
      if (wants(this.#projection, test.streamId, test.eventType) === test.isExpectedIgnored) {
        throw new BatchError(index, { tag: 'other', val: misdelivery(this.#projection, index, test) });
      }
    });
    const delivered: { index: number; event: Event }[] = [];
    events.forEach((test, index) => {
      // Every event takes a revision and a position, delivered or not.
      const revision = this.#revisions.get(test.streamId) ?? 0;
      this.#revisions.set(test.streamId, revision + 1);
      this.#position += 1;
      if (!test.isExpectedIgnored) delivered.push({ index, event: test.toEvent(this.#position, revision) });
    });

    const scratch = new Scratch(this.#documents, this.#documentLimit);
    const previousWriter = setLogWriter((level, message) => this.#logs.push([level, message]));
    try {
      this.applyBatch(delivered, scratch);
    } finally {
      setLogWriter(previousWriter);
    }
    scratch.commit();
  }

  /**
   * Runs the delivered events against `backend`; throws a `BatchError`
   * naming the failing event's index among those given. Here the
   * projection's own code, natively; a built module in `loadComponent`'s.
   */
  protected applyBatch(delivered: { index: number; event: Event }[], backend: Backend): void {
    const model = new ReadModel(backend);
    const restore = forbidClockAndRandomness();
    try {
      for (const { index, event } of delivered) {
        try {
          this.#projection.apply(event, model);
        } catch (thrown) {
          throw new BatchError(index, toHandleError(thrown));
        }
      }
    } finally {
      restore();
    }
  }

  /** A committed document, parsed; `undefined` when there is none. */
  document<T = unknown>(collection: string, key: string): T | undefined {
    const json = this.#documents.get(collection)?.get(key);
    return json === undefined ? undefined : (JSON.parse(json) as T);
  }

  /** A collection's committed documents by key, in key order. */
  collection<T = unknown>(collection: string): Record<string, T> {
    const entries = [...(this.#documents.get(collection) ?? new Map<string, string>())].sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0,
    );
    return Object.fromEntries(entries.map(([key, json]) => [key, JSON.parse(json) as T]));
  }

  /** The collections holding documents, sorted. */
  collections(): string[] {
    return [...this.#documents].filter(([, documents]) => documents.size > 0).map(([name]) => name).sort();
  }

  /** The log lines written so far, oldest first; clears them. */
  takeLogs(): [Level, string][] {
    const logs = this.#logs;
    this.#logs = [];
    return logs;
  }
}

/** The batch's writes over the committed documents. */
class Scratch implements Backend {
  readonly #writes = new Map<string, Map<string, string | undefined>>();

  constructor(
    private readonly base: Documents,
    private readonly limit: number,
  ) {}

  get(collection: string, key: string): string | undefined {
    const written = this.#writes.get(collection);
    if (written?.has(key)) return written.get(key);
    return this.base.get(collection)?.get(key);
  }

  put(collection: string, key: string, json: string) {
    const refused = checkPut(collection, key, json, this.limit);
    if (!refused) this.#write(collection, key, json);
    return refused;
  }

  delete(collection: string, key: string): void {
    // Nothing can be stored under a name `put` refuses, so there is nothing to delete.
    if (checkName(collection, key)) return;
    this.#write(collection, key, undefined);
  }

  #write(collection: string, key: string, json: string | undefined): void {
    let written = this.#writes.get(collection);
    if (!written) this.#writes.set(collection, (written = new Map()));
    written.set(key, json);
  }

  commit(): void {
    for (const [collection, writes] of this.#writes) {
      let documents = this.base.get(collection);
      if (!documents) this.base.set(collection, (documents = new Map()));
      for (const [key, json] of writes) {
        if (json === undefined) documents.delete(key);
        else documents.set(key, json);
      }
    }
  }
}

/** Why `test`, the `index`th event given, is not delivered as its marking says. */
function misdelivery(projection: Projection, index: number, test: TestEvent): string {
  const event = `event ${index} (stream \`${test.streamId}\`, type \`${test.eventType}\`)`;
  if (test.isExpectedIgnored) {
    return `${event} is marked \`expectIgnored\` but \`${projection.name}\` wants it: ${filters(projection)}`;
  }
  const reasons: string[] = [];
  if (test.eventType.startsWith('$')) reasons.push('`$` types are system events, never delivered');
  if (!wantsType(projection, test.eventType)) {
    reasons.push(`its type is not one the projection asks for (${typeFilter(projection)})`);
  }
  if (!wantsStream(projection, test.streamId)) {
    const hint = test.hasDefaultStream ? ' (`test` is the default: set one with `.stream(...)`)' : '';
    reasons.push(`its stream matches none of the stream prefixes ${JSON.stringify(projection.streams)}${hint}`);
  }
  return `${event} would never reach \`${projection.name}\`: ${reasons.join('; ')}; give it a stream and type the projection wants, or mark it \`.expectIgnored()\` to test that it is ignored`;
}

function filters(projection: Projection): string {
  const streams = projection.streams?.length ? `stream prefixes ${JSON.stringify(projection.streams)}` : 'any stream';
  return `${streams}; ${typeFilter(projection)}`;
}

function typeFilter(projection: Projection): string {
  const types = projection.eventTypes ?? [];
  const prefixes = projection.eventTypePrefixes ?? [];
  if (types.length === 0 && prefixes.length === 0) return 'any type';
  const parts = [];
  if (types.length) parts.push(`event types ${JSON.stringify(types)}`);
  if (prefixes.length) parts.push(`event type prefixes ${JSON.stringify(prefixes)}`);
  return parts.join(' or ');
}
