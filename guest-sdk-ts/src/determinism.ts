// A projection must give the same documents for the same events. Inside a
// module the clock is frozen at build time and random numbers repeat in
// every instance, so code that reads them would be wrong without a sign:
// while a projection runs, reading them throws instead.

const NOT_DETERMINISTIC =
  'is not available in a projection: it must give the same documents for the same events (use event.createdMs for time)';

function refuse(what: string): never {
  throw new Error(`${what} ${NOT_DETERMINISTIC}`);
}

/** Replaces the clock and randomness with functions that throw; returns how to put them back. */
export function forbidClockAndRandomness(): () => void {
  const OriginalDate = globalThis.Date;
  const originalRandom = Math.random;
  const crypto = globalThis.crypto as { getRandomValues?: unknown } | undefined;
  const originalGetRandomValues = crypto?.getRandomValues;

  class ProjectionDate extends OriginalDate {
    constructor(...args: ConstructorParameters<DateConstructor> | []) {
      if (args.length === 0) refuse('new Date() without a time');
      super(...(args as ConstructorParameters<DateConstructor>));
    }
    static override now(): number {
      return refuse('Date.now()');
    }
  }
  globalThis.Date = ProjectionDate as DateConstructor;
  Math.random = () => refuse('Math.random()');
  if (crypto && originalGetRandomValues) {
    crypto.getRandomValues = () => refuse('crypto.getRandomValues()');
  }
  return () => {
    globalThis.Date = OriginalDate;
    Math.random = originalRandom;
    if (crypto && originalGetRandomValues) crypto.getRandomValues = originalGetRandomValues;
  };
}
