// The projection's read model: JSON documents by collection and key.

import { ReadModelError } from './errors.js';
import { toJson, type WriteRefusal } from './rules.js';

/** Where documents live: the host in a module, memory in the test harness. */
export interface Backend {
  /** The document's JSON text, if any. */
  get(collection: string, key: string): string | undefined;
  /** Stores JSON text; says why not when refused. */
  put(collection: string, key: string, json: string): WriteRefusal | undefined;
  /** Removes a document; removing nothing is not an error. */
  delete(collection: string, key: string): void;
}

/** A refusal in words, as the Rust SDK words it. */
export function refusalMessage(refusal: WriteRefusal): string {
  switch (refusal.kind) {
    case 'too-large':
      return `document is larger than the limit of ${refusal.limit} bytes`;
    case 'invalid-json':
      return `document is not valid JSON: ${refusal.message}`;
    case 'invalid-name':
      return `invalid collection or key: ${refusal.message}`;
  }
}

/**
 * The read model a projection reads and writes. Reads see the batch's
 * earlier writes; a batch that fails keeps none of them.
 */
export class ReadModel {
  readonly #backend: Backend;

  constructor(backend: Backend) {
    this.#backend = backend;
  }

  /** The document under `key` in `collection`, parsed, if any. */
  get<T = unknown>(collection: string, key: string): T | undefined {
    const json = this.#backend.get(collection, key);
    return json === undefined ? undefined : (JSON.parse(json) as T);
  }

  /** Stores `document` under `key`, replacing any. A refused write is a `ReadModelError`. */
  put(collection: string, key: string, document: unknown): void {
    const encoded = toJson(document);
    if (!('json' in encoded)) {
      throw new ReadModelError(`${collection}/${key}: ${refusalMessage(encoded)}`);
    }
    const refused = this.#backend.put(collection, key, encoded.json);
    if (refused) throw new ReadModelError(`${collection}/${key}: ${refusalMessage(refused)}`);
  }

  /** Removes the document under `key`; removing nothing is not an error. */
  delete(collection: string, key: string): void {
    this.#backend.delete(collection, key);
  }

  /** Reads the document (or `initial()` when there is none), changes it and stores it. */
  update<T>(collection: string, key: string, initial: () => T, change: (document: T) => T | void): void {
    const current = this.get<T>(collection, key) ?? initial();
    const changed = change(current);
    this.put(collection, key, changed === undefined ? current : changed);
  }
}
