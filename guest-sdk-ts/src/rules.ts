// The rules a projection's writes must follow: the same as the host's
// (guest-sdk/src/rules.rs), so a write the test harness accepts is one the
// host accepts, refused with the same kind of error when it is not.

/** The largest document the host stores by default, in bytes of JSON text. */
export const MAX_DOCUMENT_BYTES = 1 << 20;
/** The longest collection name, in bytes of UTF-8. */
export const MAX_COLLECTION_BYTES = 256;
/** The longest key, in bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;
/** The deepest nesting of arrays and objects the host accepts. */
export const MAX_DEPTH = 128;

/** Why a write was refused, as the host reports it. */
export type WriteRefusal =
  | { kind: 'too-large'; limit: number }
  | { kind: 'invalid-json'; message: string }
  | { kind: 'invalid-name'; message: string };

const encoder = new TextEncoder();

/** The bytes `text` takes in UTF-8. */
export function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/** Checks a collection name and key: each 1 to its limit in bytes. */
export function checkName(collection: string, key: string): WriteRefusal | undefined {
  const fits = (name: string, max: number) => name.length > 0 && utf8Length(name) <= max;
  if (fits(collection, MAX_COLLECTION_BYTES) && fits(key, MAX_KEY_BYTES)) return undefined;
  return {
    kind: 'invalid-name',
    message: `collection must be 1-${MAX_COLLECTION_BYTES} bytes and key 1-${MAX_KEY_BYTES} bytes`,
  };
}

/**
 * The JSON text of a value, or why it has none (undefined, a function, a
 * bigint, a cycle). Everything else about a document is checked by
 * `checkDocument`: on the host for a module, in the harness for tests.
 */
export function toJson(value: unknown): { json: string } | WriteRefusal {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (e) {
    return { kind: 'invalid-json', message: `cannot be written as JSON: ${messageOf(e)}` };
  }
  if (json === undefined) {
    return { kind: 'invalid-json', message: `cannot be written as JSON: ${typeof value}` };
  }
  return { json };
}

/**
 * Checks a document's JSON text as the host does: at most `maxBytes`,
 * nested at most 128 deep, no lone UTF-16 surrogate (the host's JSON reader
 * refuses unpaired `\u` escapes).
 */
export function checkDocument(json: string, maxBytes = MAX_DOCUMENT_BYTES): WriteRefusal | undefined {
  if (utf8Length(json) > maxBytes) return { kind: 'too-large', limit: maxBytes };
  if (depth(json) > MAX_DEPTH) {
    return { kind: 'invalid-json', message: `arrays and objects nest deeper than ${MAX_DEPTH}` };
  }
  // JSON.stringify escapes a surrogate only when it is alone (a pair is
  // written as it is), so an escaped surrogate that does not follow an
  // escaped backslash is a lone one.
  if (/(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i.test(json)) {
    return { kind: 'invalid-json', message: 'a string holds a lone UTF-16 surrogate' };
  }
  return undefined;
}

/** Checks a whole `put`, in the host's order: the name, then the document. */
export function checkPut(
  collection: string,
  key: string,
  json: string,
  maxBytes = MAX_DOCUMENT_BYTES,
): WriteRefusal | undefined {
  return checkName(collection, key) ?? checkDocument(json, maxBytes);
}

/** The deepest nesting of arrays and objects in JSON text (strings skipped). */
function depth(json: string): number {
  let deepest = 0;
  let current = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '[' || c === '{') {
      deepest = Math.max(deepest, ++current);
    } else if (c === ']' || c === '}') {
      current--;
    }
  }
  return deepest;
}

/** A thrown value's message: an Error's, or the value as text. */
export function messageOf(thrown: unknown): string {
  if (thrown instanceof Error) return thrown.message;
  if (typeof thrown === 'string') return thrown;
  try {
    return JSON.stringify(thrown) ?? String(thrown);
  } catch {
    return String(thrown);
  }
}
