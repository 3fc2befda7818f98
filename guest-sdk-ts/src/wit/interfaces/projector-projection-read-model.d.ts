declare module 'projector:projection/read-model@0.2.0' {
  /**
   * The document stored under `key` in `collection`, as JSON text, if any.
   */
  export function get(collection: string, key: string): string | undefined;
  /**
   * Stores `document` (JSON text) under `key` in `collection`, replacing any previous one.
   * The host checks, in this order, the names, the size (1 MiB by default) and the JSON;
   * the Rust SDK's `rules` module holds these checks, and its test harness applies them too.
   */
  export function put(collection: string, key: string, document: string): void;
  /**
   * Removes the document under `key` in `collection`; removing nothing is not an error.
   * Under a name `put` would refuse nothing can be stored, so such a delete does nothing.
   */
  export { _delete as delete };
  function _delete(collection: string, key: string): void;
  /**
   * Why a write was refused. Nothing is written when one is returned.
   */
  export type WriteError = WriteErrorTooLarge | WriteErrorInvalidJson | WriteErrorInvalidName;
  /**
   * The document is larger than the host's limit, in bytes (the limit is given).
   */
  export interface WriteErrorTooLarge {
    tag: 'too-large',
    val: bigint,
  }
  /**
   * The document is not valid JSON, or holds what a typical JSON reader refuses (a number
   * beyond a 64-bit float, arrays and objects nested deeper than 128); the parser's
   * message is given.
   */
  export interface WriteErrorInvalidJson {
    tag: 'invalid-json',
    val: string,
  }
  /**
   * The collection or key is empty or too long (a collection is 1 to
   * 256 bytes, a key 1 to 1024); the reason is given.
   */
  export interface WriteErrorInvalidName {
    tag: 'invalid-name',
    val: string,
  }
}
