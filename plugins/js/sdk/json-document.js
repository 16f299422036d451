/**
 * JSON read and written exactly as a Rust handler does with serde_json
 * (`preserve_order` + `arbitrary_precision`, as the Rust examples use it),
 * so a JavaScript handler's outputs match the Rust one's byte for byte:
 *
 *     import { json } from 'sluice-plugin';
 *
 *     const document = json.parse(text); // throws json.JsonError
 *     document.set('seen', true);
 *     const output = json.stringify(document);
 * `JSON.parse` cannot: it turns
 * every number into a double (`1.0` would come out as `1`, large integers
 * rounded) and moves integer-like keys to the front of an object.
 *
 * - Numbers are kept as written (a `JsonNumber`), except that an exponent is
 *   written `e` with an explicit sign: `1E5` becomes `1e+5`.
 * - Objects are `Map`s that keep their members in input order; a repeated
 *   member keeps its first position and takes its last value.
 * - Output is compact, with `JSON.stringify`'s string escapes, which are
 *   serde_json's for well-formed strings.
 * - Whatever serde_json rejects is rejected: anything outside the JSON
 *   grammar, escapes that leave a surrogate unpaired, and nesting 128 or more
 *   levels deep.
 */

/** serde_json's recursion limit: arrays and objects may nest this deep, no deeper. */
export const MAX_DEPTH = 127;

const WHITESPACE = /[ \t\n\r]*/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const STRING = /"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;
const LITERALS = [
  ['true', true],
  ['false', false],
  ['null', null],
];

/** The text is not a JSON document as serde_json understands one. */
export class JsonError extends Error {
  constructor(message) {
    super(message);
    this.name = 'JsonError';
  }
}

/** A JSON number, kept as written (exponent normalised as described above). */
export class JsonNumber {
  constructor(text) {
    this.text = text.replace(/[eE]([+-]?)/, (_, sign) => `e${sign || '+'}`);
  }
}

/** The document in `text`: Maps, Arrays, strings, JsonNumbers, booleans, null. */
export function parse(text) {
  const reader = new Reader(text);
  const document = reader.value(0);
  reader.skipWhitespace();
  if (reader.position !== text.length) reader.fail('trailing characters');
  return document;
}

/** `value` as compact JSON text. */
export function stringify(value) {
  if (value instanceof JsonNumber) return value.text;
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(stringify).join(',')}]`;
  if (value instanceof Map) {
    const members = [];
    for (const [key, member] of value) members.push(`${JSON.stringify(key)}:${stringify(member)}`);
    return `{${members.join(',')}}`;
  }
  throw new TypeError(`not a JSON value: ${value}`);
}

/** What sort of JSON value this is, for messages: "an array", "a number", ... */
export function kind(value) {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return 'a boolean';
  if (value instanceof JsonNumber) return 'a number';
  if (typeof value === 'string') return 'a string';
  if (Array.isArray(value)) return 'an array';
  return 'an object';
}

/** A recursive-descent reader over one document. */
class Reader {
  constructor(text) {
    this.text = text;
    this.position = 0;
  }

  fail(problem) {
    throw new JsonError(`${problem} at character ${this.position}`);
  }

  skipWhitespace() {
    this.match(WHITESPACE);
  }

  /** The text `pattern` (a sticky regex) matches here, consumed; or null. */
  match(pattern) {
    pattern.lastIndex = this.position;
    const found = pattern.exec(this.text);
    if (found === null) return null;
    this.position = pattern.lastIndex;
    return found[0];
  }

  /** Consume `character` (after whitespace) if it comes next. */
  eat(character) {
    this.skipWhitespace();
    if (this.text[this.position] !== character) return false;
    this.position += 1;
    return true;
  }

  /** `depth`: how many arrays and objects enclose this value. */
  value(depth) {
    this.skipWhitespace();
    const next = this.text[this.position];
    if (next === '{' || next === '[') {
      if (depth === MAX_DEPTH) this.fail(`nested more than ${MAX_DEPTH} levels deep`);
      this.position += 1;
      return next === '{' ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (next === '"') return this.string();
    for (const [word, literal] of LITERALS) {
      if (this.text.startsWith(word, this.position)) {
        this.position += word.length;
        return literal;
      }
    }
    const number = this.match(NUMBER);
    if (number === null) this.fail('expected a value');
    return new JsonNumber(number);
  }

  string() {
    const token = this.match(STRING);
    if (token === null) this.fail('malformed string');
    const text = JSON.parse(token);
    if (!text.isWellFormed()) this.fail('unpaired surrogate in a string escape');
    return text;
  }

  array(depth) {
    const items = [];
    if (this.eat(']')) return items;
    do {
      items.push(this.value(depth));
    } while (this.eat(','));
    if (!this.eat(']')) this.fail('expected `,` or `]`');
    return items;
  }

  object(depth) {
    const members = new Map();
    if (this.eat('}')) return members;
    do {
      this.skipWhitespace();
      if (this.text[this.position] !== '"') this.fail('expected a member name');
      const key = this.string();
      if (!this.eat(':')) this.fail('expected `:`');
      members.set(key, this.value(depth));
    } while (this.eat(','));
    if (!this.eat('}')) this.fail('expected `,` or `}`');
    return members;
  }
}
