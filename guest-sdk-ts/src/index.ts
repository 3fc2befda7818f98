// Write Projector projections in TypeScript: typed events in, JSON documents
// out, tested with the Node test runner (see ./testing.ts) and built into a
// WebAssembly component with `projector-build-ts`.

export { defineProjection, wants, type Description, type Projection } from './projection.js';
export { Event, eventType, type EventType, type Schema } from './event.js';
export { ReadModel } from './model.js';
export { InvalidEvent, ReadModelError } from './errors.js';
export { log, type Level } from './log.js';
export * as rules from './rules.js';
