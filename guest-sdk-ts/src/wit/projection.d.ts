/// <reference path="./interfaces/projector-projection-log.d.ts" />
/// <reference path="./interfaces/projector-projection-read-model.d.ts" />
/// <reference path="./interfaces/projector-projection-types.d.ts" />
declare module 'projector:projection/projection@0.2.0' {
  export type Event = import('projector:projection/types@0.2.0').Event;
  export type Description = import('projector:projection/types@0.2.0').Description;
  export type BatchError = import('projector:projection/types@0.2.0').BatchError;
  export type * as ProjectorProjectionLog020 from 'projector:projection/log@0.2.0'; // import projector:projection/log@0.2.0
  export type * as ProjectorProjectionReadModel020 from 'projector:projection/read-model@0.2.0'; // import projector:projection/read-model@0.2.0
  export type * as ProjectorProjectionTypes020 from 'projector:projection/types@0.2.0'; // import projector:projection/types@0.2.0
  /**
  * Describes the projection. Called once, when the module is deployed.
  */
  export function describe(): Description;
  /**
  * Applies a batch of events, in order. Returns an error naming the first
  * event that could not be applied; the host then discards the batch's writes.
  */
  export function handleBatch(events: Array<Event>): void;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
