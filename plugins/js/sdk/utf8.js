/**
 * UTF-8 decoding whose errors read exactly like Rust's.
 *
 * A dead-letter reason should not depend on the language a plugin is
 * written in, so a `Utf8Error`'s message is the text of Rust's
 * `std::str::Utf8Error` ("invalid utf-8 sequence of 1 bytes from index 0"),
 * found with the same rules: the longest valid prefix, then the length of
 * the maximal invalid subsequence after it, or none when the bytes end in the
 * middle of a character. Pure JavaScript, so it also runs under Node.
 */

// ignoreBOM: a leading U+FEFF is part of the text, as in Rust and Python,
// not a marker to drop.
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class Utf8Error extends Error {
  /** `errorLen` is `undefined` when the bytes end in the middle of a character. */
  constructor(validUpTo, errorLen) {
    super(
      errorLen === undefined
        ? `incomplete utf-8 byte sequence from index ${validUpTo}`
        : `invalid utf-8 sequence of ${errorLen} bytes from index ${validUpTo}`,
    );
    this.name = 'Utf8Error';
    this.validUpTo = validUpTo;
    this.errorLen = errorLen;
  }
}

/** `bytes` as a string; throws `Utf8Error` when they are not UTF-8. */
export function decodeUtf8(bytes) {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    throw findUtf8Error(bytes) ?? new Utf8Error(0, 1);
  }
}

/** The first UTF-8 error in `bytes`, or `undefined` when there is none. */
export function findUtf8Error(bytes) {
  let index = 0;
  while (index < bytes.length) {
    const first = bytes[index];
    if (first < 0x80) {
      index += 1;
      continue;
    }
    const shape = sequenceShape(first);
    if (shape === undefined) return new Utf8Error(index, 1);
    for (let offset = 1; offset < shape.width; offset += 1) {
      if (index + offset >= bytes.length) return new Utf8Error(index, undefined);
      const byte = bytes[index + offset];
      const [low, high] = offset === 1 ? [shape.low, shape.high] : [0x80, 0xbf];
      if (byte < low || byte > high) return new Utf8Error(index, offset);
    }
    index += shape.width;
  }
  return undefined;
}

/**
 * Width of the sequence a lead byte starts, and the range its second byte
 * must fall in (narrower after E0, ED, F0 and F4, which rules out overlong
 * forms, surrogates and code points past U+10FFFF). `undefined` for a byte
 * that cannot start a sequence.
 */
function sequenceShape(first) {
  if (first >= 0xc2 && first <= 0xdf) return { width: 2, low: 0x80, high: 0xbf };
  if (first === 0xe0) return { width: 3, low: 0xa0, high: 0xbf };
  if (first === 0xed) return { width: 3, low: 0x80, high: 0x9f };
  if (first >= 0xe1 && first <= 0xef) return { width: 3, low: 0x80, high: 0xbf };
  if (first === 0xf0) return { width: 4, low: 0x90, high: 0xbf };
  if (first === 0xf4) return { width: 4, low: 0x80, high: 0x8f };
  if (first >= 0xf1 && first <= 0xf3) return { width: 4, low: 0x80, high: 0xbf };
  return undefined;
}
