// Runs a built module (the `.wasm` that `projector-build-ts` makes, the
// artifact you deploy) natively in Node, through jco's transpiler, under the
// same harness as the source: the same in-memory read model, write rules and
// delivery checks. A test that the module does what its source does.
//
// Needs `@bytecodealliance/jco` (pinned with `@bytecodealliance/preview2-shim`
// 0.26.0) as a dev dependency of the project.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { toHandleError, type HandleError } from './errors.js';
import type { Event } from './event.js';
import { log, type Level } from './log.js';
import type { Backend } from './model.js';
import type { Projection } from './projection.js';
import type { WriteRefusal } from './rules.js';
import { BatchError, Harness } from './testing.js';

/** What the transpiled module exports. */
interface ModuleExports {
  describe(): {
    name: string;
    version: string;
    eventTypes: string[];
    eventTypePrefixes: string[];
    streamPrefixes: string[];
    indexes: { collection: string; field: string }[];
  };
  handleBatch(events: unknown[]): void;
}

/** The read model the module's imports reach, set for the batch that runs. */
class Imports {
  backend: Backend | undefined;

  #current(): Backend {
    if (!this.backend) throw new Error('the module used its read model outside a batch');
    return this.backend;
  }

  readModel() {
    return {
      get: (collection: string, key: string) => this.#current().get(collection, key),
      put: (collection: string, key: string, json: string) => {
        const refused = this.#current().put(collection, key, json);
        // A thrown value without `payload` is the `err` of the WIT result.
        if (refused) throw toWriteError(refused);
      },
      delete: (collection: string, key: string) => this.#current().delete(collection, key),
    };
  }

  log() {
    return { write: (level: Level, message: string) => log[level](message) };
  }
}

function toWriteError(refused: WriteRefusal) {
  switch (refused.kind) {
    case 'too-large':
      return { tag: 'too-large', val: BigInt(refused.limit) };
    case 'invalid-json':
      return { tag: 'invalid-json', val: refused.message };
    case 'invalid-name':
      return { tag: 'invalid-name', val: refused.message };
  }
}

/** A harness over a built module. */
class ComponentHarness extends Harness {
  readonly #module: ModuleExports;
  readonly #imports: Imports;

  constructor(description: Projection, module: ModuleExports, imports: Imports, options: { documentBytes?: number }) {
    super(description, options);
    this.#module = module;
    this.#imports = imports;
  }

  protected override applyBatch(delivered: { index: number; event: Event }[], backend: Backend): void {
    const events = delivered.map(({ event }) => ({
      streamId: event.streamId,
      eventType: event.eventType,
      eventId: event.eventId,
      streamRevision: BigInt(event.streamRevision),
      commitPosition: BigInt(event.commitPosition),
      createdMs: BigInt(event.createdMs),
      contentType: event.contentType,
      data: event.data,
      metadata: event.metadata,
    }));
    this.#imports.backend = backend;
    try {
      this.#module.handleBatch(events);
    } catch (thrown) {
      const failed = (thrown as { payload?: { eventIndex: number; error: HandleError } }).payload;
      if (!failed) throw new BatchError(delivered[0]?.index ?? 0, toHandleError(thrown));
      throw new BatchError(delivered[failed.eventIndex]?.index ?? failed.eventIndex, failed.error);
    } finally {
      this.#imports.backend = undefined;
    }
  }
}

/**
 * Loads the built module at `path` into a harness: `given`, `document`,
 * `collection` and the rest work as with `new Harness(projection)`, and the
 * module describes itself through its own `describe`.
 */
export async function loadComponent(path: string, options: { documentBytes?: number } = {}): Promise<Harness> {
  const { transpile } = await import('@bytecodealliance/jco');
  const { files } = await transpile(readFileSync(path), {
    name: 'projection',
    instantiation: 'async',
    noTypescript: true,
    quiet: true,
  });
  const dir = mkdtempSync(join(tmpdir(), 'projector-component-'));
  try {
    for (const [name, bytes] of Object.entries(files as Record<string, Uint8Array>)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), bytes);
    }
    const generated = await import(pathToFileURL(join(dir, 'projection.js')).href);
    const imports = new Imports();
    const module: ModuleExports = await generated.instantiate(
      (file: string) => WebAssembly.compile(readFileSync(join(dir, file))),
      { 'projector:projection/read-model': imports.readModel(), 'projector:projection/log': imports.log() },
    );
    const d = module.describe();
    const description: Projection = {
      name: d.name,
      version: d.version,
      eventTypes: d.eventTypes,
      eventTypePrefixes: d.eventTypePrefixes,
      streams: d.streamPrefixes,
      indexes: d.indexes.map((i) => [i.collection, i.field] as [string, string]),
      apply() {
        throw new Error('a built module applies whole batches');
      },
    };
    return new ComponentHarness(description, module, imports, options);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
