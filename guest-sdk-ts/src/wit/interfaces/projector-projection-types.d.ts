declare module 'projector:projection/types@0.2.0' {
  /**
   * One event, as stored in the event store.
   */
  export interface Event {
    /**
     * The stream the event was appended to, e.g. `user-42`.
     */
    streamId: string,
    /**
     * The event type, e.g. `UserRegistered`.
     */
    eventType: string,
    /**
     * The event's id (a UUID in its hyphenated text form).
     */
    eventId: string,
    /**
     * The event's number within its stream, from 0.
     */
    streamRevision: bigint,
    /**
     * The event's commit position in `$all`; strictly increasing across a batch.
     */
    commitPosition: bigint,
    /**
     * When the store accepted the event, in milliseconds since the Unix epoch.
     */
    createdMs: bigint,
    /**
     * The content type, e.g. `application/json`.
     */
    contentType: string,
    /**
     * The event payload.
     */
    data: Uint8Array,
    /**
     * The event metadata (JSON by convention; may be empty).
     */
    metadata: Uint8Array,
  }
  /**
   * A secondary index the host keeps on a collection's documents.
   */
  export interface Index {
    /**
     * The collection the index is on.
     */
    collection: string,
    /**
     * A dotted path into the JSON document, e.g. `address.city`.
     */
    field: string,
  }
  /**
   * What a projection is and what it wants to receive.
   */
  export interface Description {
    /**
     * The projection's name, e.g. `user-directory`.
     */
    name: string,
    /**
     * The version of its logic, e.g. `1.2.0`; shown in status.
     */
    version: string,
    /**
     * Deliver events whose type is exactly one of these.
     */
    eventTypes: Array<string>,
    /**
     * Deliver events whose type starts with one of these. An event is delivered when its
     * type is in `event-types` or starts with one of these; with both lists empty, every
     * type is.
     */
    eventTypePrefixes: Array<string>,
    /**
     * Deliver events whose stream starts with one of these; empty means no stream filter.
     */
    streamPrefixes: Array<string>,
    /**
     * The indexes to create on its documents.
     */
    indexes: Array<Index>,
  }
  /**
   * Why a batch could not be applied. The host records it, with the
   * event it concerns, as the projection's fault.
   */
  export type HandleError = HandleErrorInvalidEvent | HandleErrorReadModel | HandleErrorOther;
  /**
   * The event's payload or metadata does not have the shape the projection expects.
   */
  export interface HandleErrorInvalidEvent {
    tag: 'invalid-event',
    val: string,
  }
  /**
   * A read-model operation failed and the projection chose to stop.
   */
  export interface HandleErrorReadModel {
    tag: 'read-model',
    val: string,
  }
  /**
   * Any other failure, described in words.
   */
  export interface HandleErrorOther {
    tag: 'other',
    val: string,
  }
  /**
   * A failed batch: which event failed and why.
   */
  export interface BatchError {
    /**
     * The index, within the batch, of the event that failed.
     */
    eventIndex: number,
    /**
     * What went wrong.
     */
    error: HandleError,
  }
}
