// Log lines from a projection, shown by the host under its name.

/** How important a line is. */
export type Level = 'debug' | 'info' | 'warn' | 'error';

type Writer = (level: Level, message: string) => void;

let writer: Writer = () => {};

/** Where lines go: the host in a module, the harness's list in tests. */
export function setLogWriter(next: Writer): Writer {
  const previous = writer;
  writer = next;
  return previous;
}

/** Writes a log line. Never fails. */
export const log = {
  debug: (message: string) => writer('debug', message),
  info: (message: string) => writer('info', message),
  warn: (message: string) => writer('warn', message),
  error: (message: string) => writer('error', message),
};
