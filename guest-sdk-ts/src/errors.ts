// The errors a projection reports. Each becomes the contract's
// `handle-error` for the event being applied: the host faults the
// projection (or dead-letters the event under on_error=skip) with the
// message, and discards the batch's writes.

/** The event does not have the shape the projection expects. */
export class InvalidEvent extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidEvent';
  }
}

/** A read-model operation failed (a write the host refused). */
export class ReadModelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReadModelError';
  }
}

/** The contract's `handle-error`: what kind of failure, and its message. */
export type HandleError =
  | { tag: 'invalid-event'; val: string }
  | { tag: 'read-model'; val: string }
  | { tag: 'other'; val: string };

/** Any thrown value as a `handle-error`: never lost, never a bare trap. */
export function toHandleError(thrown: unknown): HandleError {
  if (thrown instanceof InvalidEvent) return { tag: 'invalid-event', val: thrown.message };
  if (thrown instanceof ReadModelError) return { tag: 'read-model', val: thrown.message };
  if (thrown instanceof Error) {
    return { tag: 'other', val: thrown.name && thrown.name !== 'Error' ? `${thrown.name}: ${thrown.message}` : thrown.message };
  }
  return { tag: 'other', val: `threw ${describeThrown(thrown)}` };
}

/** The message a host shows for a `handle-error` (as the Rust SDK formats it). */
export function handleErrorMessage(error: HandleError): string {
  switch (error.tag) {
    case 'invalid-event':
      return `invalid event: ${error.val}`;
    case 'read-model':
      return `read model: ${error.val}`;
    default:
      return error.val;
  }
}

function describeThrown(thrown: unknown): string {
  if (typeof thrown === 'string') return JSON.stringify(thrown);
  try {
    return JSON.stringify(thrown) ?? String(thrown);
  } catch {
    return String(thrown);
  }
}
