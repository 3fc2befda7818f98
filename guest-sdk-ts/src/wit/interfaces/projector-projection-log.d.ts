declare module 'projector:projection/log@0.2.0' {
  /**
   * Writes a log line. Never fails. The host writes every line to its own log at the
   * given level, under the target `projection`, with the projection's name as a field.
   */
  export function write(level: Level, message: string): void;
  /**
   * How important a line is.
   * # Variants
   * 
   * ## `"debug"`
   * 
   * Detail useful when developing.
   * ## `"info"`
   * 
   * Normal operation.
   * ## `"warn"`
   * 
   * Something unexpected that the projection handled.
   * ## `"error"`
   * 
   * Something that went wrong.
   */
  export type Level = 'debug' | 'info' | 'warn' | 'error';
}
