/**
 * Messages in, outputs out: the contract's records with the conveniences
 * that keep handlers short. Keys, values and header values are
 * `Uint8Array`s; wherever this module takes one, a string is accepted too
 * and encoded as UTF-8.
 */

import { decodeUtf8 } from './utf8.js';

const encoder = new TextEncoder();

export function asBytes(data) {
  return typeof data === 'string' ? encoder.encode(data) : data;
}

/** A record to produce; build one with the static methods, then chain. */
export class Output {
  constructor({ topic, key, value, headers = [] } = {}) {
    this.topic = topic;
    this.key = key;
    this.value = value;
    this.headers = headers;
  }

  /** A record with this value, no key and no headers, for the stage's output topic. */
  static of(value) {
    return new Output({ value: asBytes(value) });
  }

  /** The input record passed through unchanged: same key, value and headers. */
  static fromMessage(message) {
    return new Output({ key: message.key, value: message.value, headers: [...message.headers] });
  }

  /**
   * The input record with a new value: keeps the key (and so the
   * partitioning) and the headers, the usual shape of a transform.
   */
  static replacingValue(message, value) {
    return new Output({ key: message.key, value: asBytes(value), headers: [...message.headers] });
  }

  /** Send this record to `topic` instead of the stage's output topic. */
  toTopic(topic) {
    this.topic = topic;
    return this;
  }

  /** Set the record key. */
  withKey(key) {
    this.key = asBytes(key);
    return this;
  }

  /** Append a header (Kafka keeps duplicates and their order). */
  withHeader(name, value) {
    this.headers.push({ name, value: asBytes(value) });
    return this;
  }
}

/** The value as text; `undefined` for a tombstone. Throws `Utf8Error` when it is not UTF-8. */
export function valueText(message) {
  return message.value == null ? undefined : decodeUtf8(message.value);
}

/** The key as text; `undefined` when there is none. Throws `Utf8Error` when it is not UTF-8. */
export function keyText(message) {
  return message.key == null ? undefined : decodeUtf8(message.key);
}

/** The value of the first header with this name. */
export function header(message, name) {
  return message.headers.find((found) => found.name === name)?.value;
}

/** The value of the first header with this name, when it is UTF-8 text. */
export function headerText(message, name) {
  const value = header(message, name);
  try {
    return value === undefined ? undefined : decodeUtf8(value);
  } catch {
    return undefined;
  }
}
