// The plugin configuration of as_header_filter and its JSON parser.
//
// AssemblyScript 0.14 has no JSON library and @solo-io/proxy-runtime 0.1.8 ships none, so
// this is a small hand-written parser for exactly one shape:
//
//   {"request_header": "<string>", "response_headers": [["<name>", "<value>"], ...]}
//
// It follows what serde_json 1.0 + serde derive do for the Rust plugin's
// `#[serde(default, deny_unknown_fields)] struct FilterConfig { request_header: String,
// response_headers: Vec<(String, String)> }` (plugins/rust/header_filter), step by step, so
// that the same inputs are accepted and rejected, with the same error texts and the same
// "at line L column C" positions:
// - absent fields take the defaults; `null` is not "absent" (it is a type error);
// - unknown and duplicate fields are errors;
// - like any serde struct, the config may also be given as a sequence
//   `["<request_header>", [[name, value], ...]]`, missing trailing elements taking defaults;
// - strings: JSON escapes, surrogate pairs, no raw control characters, valid UTF-8 only;
// - anything after the value other than JSON whitespace is an error.
// Checked against the built Rust plugin on ~130 configurations: identical. Known
// differences: the number in "floating point `...`" can differ in its 17th significant
// digit (AssemblyScript's parseFloat and dtoa), and the string shown in "invalid type:
// string ..." escapes only ASCII/C1 control characters, `"` and `\` like Rust's `{:?}`
// (Rust also escapes some other non-printable Unicode characters).

export class FilterConfig {
  request_header: string;
  response_header_names: Array<string>;
  response_header_values: Array<string>;

  constructor() {
    // Defaults: plugins/rust/header_filter's, with "assemblyscript" in x-wasm-filter.
    this.request_header = "user-agent";
    this.response_header_names = new Array<string>();
    this.response_header_values = new Array<string>();
    this.response_header_names.push("x-wasm-filter");
    this.response_header_values.push("assemblyscript");
    this.response_header_names.push("x-greeting");
    this.response_header_values.push("hello");
  }
}

/** The outcome of parseConfig: a config, or the reason it was rejected. */
export class ConfigResult {
  config: FilterConfig | null = null;
  error: string = "";
}

/** Rust's `u8::is_ascii_whitespace` (includes form feed, unlike JSON). */
function isAsciiWhitespace(c: u32): bool {
  return c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0c || c == 0x0d;
}

/** Parses the plugin configuration; empty or whitespace-only means all defaults. */
export function parseConfig(data: ArrayBuffer): ConfigResult {
  let result = new ConfigResult();
  let base = changetype<usize>(data);
  let len = data.byteLength;
  let blank = true;
  for (let i = 0; i < len; i++) {
    if (!isAsciiWhitespace(<u32>load<u8>(base + <usize>i))) {
      blank = false;
      break;
    }
  }
  if (blank) {
    result.config = new FilterConfig();
    return result;
  }
  let parser = new Parser(data);
  if (parser.deserializeConfig() && parser.end()) {
    result.config = parser.config;
  } else {
    result.error = parser.err;
  }
  return result;
}

const EOF: i32 = -1;

const EXPECTED_STRUCT = "struct FilterConfig";
const EXPECTED_STRING = "a string";
const EXPECTED_SEQUENCE = "a sequence";
const EXPECTED_TUPLE = "a tuple of size 2";

/** A growable byte buffer (Array<u8> hides its data pointer in AssemblyScript 0.14). */
class ByteBuf {
  buf: ArrayBuffer = new ArrayBuffer(32);
  length: i32 = 0;

  clear(): void {
    this.length = 0;
  }

  push(c: u32): void {
    if (this.length == this.buf.byteLength) {
      let bigger = new ArrayBuffer(this.length * 2);
      memory.copy(changetype<usize>(bigger), changetype<usize>(this.buf), <usize>this.length);
      this.buf = bigger;
    }
    store<u8>(changetype<usize>(this.buf) + <usize>this.length, <u8>c);
    this.length++;
  }

  ptr(): usize {
    return changetype<usize>(this.buf);
  }
}

function hexDigit(c: u32): i32 {
  if (c >= 0x30 && c <= 0x39) return <i32>(c - 0x30);
  if (c >= 0x61 && c <= 0x66) return <i32>(c - 0x61 + 10);
  if (c >= 0x41 && c <= 0x46) return <i32>(c - 0x41 + 10);
  return -1;
}

function isDigit(c: i32): bool {
  return c >= 0x30 && c <= 0x39;
}

/** Length of the longest valid UTF-8 prefix of buf[0..len) (Rust's `Utf8Error::valid_up_to`). */
function utf8ValidUpTo(ptr: usize, len: i32): i32 {
  let i = 0;
  while (i < len) {
    let c = <u32>load<u8>(ptr + <usize>i);
    if (c < 0x80) {
      i++;
      continue;
    }
    let need = 0;
    let lo: u32 = 0x80;
    let hi: u32 = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c == 0xe0) lo = 0xa0; // no overlong forms
      if (c == 0xed) hi = 0x9f; // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c == 0xf0) lo = 0x90; // no overlong forms
      if (c == 0xf4) hi = 0x8f; // nothing above U+10FFFF
    } else {
      return i;
    }
    for (let k = 1; k <= need; k++) {
      if (i + k >= len) return i;
      let cc = <u32>load<u8>(ptr + <usize>(i + k));
      if (k == 1) {
        if (cc < lo || cc > hi) return i;
      } else if (cc < 0x80 || cc > 0xbf) {
        return i;
      }
    }
    i += need + 1;
  }
  return len;
}

/**
 * An f64 the way serde_json 1.0.154 shows it in errors: decimal with at least one fractional
 * digit for 1e-5 <= |v| < 1e16, otherwise `d.ddde+N` / `d.ddde-N`. The digits come from
 * AssemblyScript's dtoa, which is not always the shortest round-trip form.
 */
function formatFloat(v: f64): string {
  if (v == 0) {
    if (1.0 / v < 0) return "-0.0";
    return "0.0";
  }
  let negative = v < 0;
  let a = negative ? -v : v;
  let s = a.toString();
  if (a >= 1e16 || a < 1e-5) s = scientific(a, s);
  if (negative) return "-" + s;
  return s;
}

/** `d.ddde+N` / `d.ddde-N` from AssemblyScript's rendering `s` of the positive number `a`. */
function scientific(a: f64, s: string): string {
  let digits = "";
  let exp = 0;
  let e = s.indexOf("e");
  if (e >= 0) {
    let exponent = s.substring(e + 1);
    if (exponent.startsWith("+")) exponent = exponent.substring(1);
    exp = <i32>parseInt(exponent);
    digits = s.substring(0, e).replace(".", "");
  } else {
    let dot = s.indexOf(".");
    let whole = dot >= 0 ? s.substring(0, dot) : s;
    let fraction = dot >= 0 ? s.substring(dot + 1) : "";
    if (a >= 1) {
      exp = whole.length - 1;
      digits = whole + fraction;
    } else {
      let zeros = 0;
      while (zeros < fraction.length && fraction.charCodeAt(zeros) == 0x30) zeros++;
      exp = -(zeros + 1);
      digits = fraction.substring(zeros);
    }
  }
  let end = digits.length;
  while (end > 1 && digits.charCodeAt(end - 1) == 0x30) end--;
  let result = digits.substring(0, 1);
  if (end > 1) result += "." + digits.substring(1, end);
  result += "e";
  if (exp >= 0) result += "+";
  return result + exp.toString();
}

/** Rust's `{:?}` of a str, for the "invalid type: string ..." message. */
function debugString(s: string): string {
  let out = "\"";
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c == 0x00) out += "\\0";
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) out += "\\u{" + (<u32>c).toString(16) + "}";
    else out += String.fromCharCode(c);
  }
  return out + "\"";
}

/**
 * A serde_json-like deserializer over a byte slice (serde_json's SliceRead): `pos` is the
 * index of the next byte. On failure a method returns false and `err` holds the message.
 * A "custom" error (serde's de::Error::custom, e.g. invalid type) has no position until
 * fixPosition() appends the current one, at the points where serde_json does.
 */
class Parser {
  data: ArrayBuffer;
  base: usize;
  len: i32;
  pos: i32 = 0;
  err: string = "";
  pending: bool = false;
  str: string = "";
  scratch: ByteBuf = new ByteBuf();
  numberDisplay: string = "";
  config: FilterConfig = new FilterConfig();

  constructor(data: ArrayBuffer) {
    this.data = data;
    this.base = changetype<usize>(data);
    this.len = data.byteLength;
  }

  // --- input -------------------------------------------------------------------------------

  peek(): i32 {
    return this.pos < this.len ? <i32>load<u8>(this.base + <usize>this.pos) : EOF;
  }

  /** serde_json's peek_or_null. */
  peekOrNull(): i32 {
    return this.pos < this.len ? <i32>load<u8>(this.base + <usize>this.pos) : 0;
  }

  /** Skips JSON whitespace; returns the next byte (not consumed) or EOF. */
  parseWhitespace(): i32 {
    while (this.pos < this.len) {
      let c = <i32>load<u8>(this.base + <usize>this.pos);
      if (c == 0x20 || c == 0x0a || c == 0x09 || c == 0x0d) {
        this.pos++;
      } else {
        return c;
      }
    }
    return EOF;
  }

  // --- errors ------------------------------------------------------------------------------

  /** serde_json's position_of_index: " at line L column C" (column = bytes before i on its line). */
  positionOf(i: i32, columnAdjust: i32 = 0): string {
    let line = 1;
    let lineStart = 0;
    for (let k = 0; k < i; k++) {
      if (load<u8>(this.base + <usize>k) == 0x0a) {
        line++;
        lineStart = k + 1;
      }
    }
    let column = i - lineStart - columnAdjust;
    if (column < 0) column = 0;
    return " at line " + line.toString() + " column " + column.toString();
  }

  /** An error caused by a consumed byte (serde_json's `error`). */
  error(message: string): bool {
    this.err = message + this.positionOf(this.pos);
    this.pending = false;
    return false;
  }

  /** An error caused by a peeked byte (serde_json's `peek_error`). */
  peekError(message: string): bool {
    let i = this.pos + 1;
    if (i > this.len) i = this.len;
    this.err = message + this.positionOf(i);
    this.pending = false;
    return false;
  }

  /** A position-less error (serde's de::Error::custom). */
  custom(message: string): bool {
    this.err = message;
    this.pending = true;
    return false;
  }

  fixPosition(): void {
    if (this.pending) {
      this.err += this.positionOf(this.pos);
      this.pending = false;
    }
  }

  // --- scalars -----------------------------------------------------------------------------

  parseIdent(rest: string): bool {
    for (let i = 0; i < rest.length; i++) {
      if (this.pos >= this.len) return this.error("EOF while parsing a value");
      let c = <i32>load<u8>(this.base + <usize>this.pos);
      this.pos++;
      if (c != rest.charCodeAt(i)) return this.error("expected ident");
    }
    return true;
  }

  /**
   * serde_json's parse_integer/parse_number/parse_decimal/parse_exponent, for error texts only:
   * sets numberDisplay to serde's Unexpected (integer `N` / floating point `X`).
   * The '-' of a negative number has been consumed.
   */
  parseAnyNumber(positive: bool): bool {
    let start = positive ? this.pos : this.pos - 1;
    if (this.pos >= this.len) return this.error("EOF while parsing a value");
    let c = this.peek();
    this.pos++;
    let significand: u64 = 0;
    let overflow = false;
    let isFloat = false;
    if (c == 0x30) {
      if (isDigit(this.peekOrNull())) return this.peekError("invalid number");
    } else if (c >= 0x31 && c <= 0x39) {
      significand = <u64>(c - 0x30);
      while (isDigit(this.peekOrNull())) {
        let digit = <u64>(this.peek() - 0x30);
        if (significand > (u64.MAX_VALUE - digit) / 10) overflow = true;
        significand = significand * 10 + digit;
        this.pos++;
      }
    } else {
      return this.error("invalid number");
    }
    if (this.peekOrNull() == 0x2e) {
      // '.'
      this.pos++;
      if (!isDigit(this.peekOrNull())) {
        if (this.pos < this.len) return this.peekError("invalid number");
        return this.peekError("EOF while parsing a value");
      }
      while (isDigit(this.peekOrNull())) this.pos++;
      isFloat = true;
    }
    let e = this.peekOrNull();
    if (e == 0x65 || e == 0x45) {
      this.pos++;
      let sign = this.peekOrNull();
      if (sign == 0x2b || sign == 0x2d) this.pos++;
      if (this.pos >= this.len) return this.error("EOF while parsing a value");
      let d = this.peek();
      this.pos++;
      if (!isDigit(d)) return this.error("invalid number");
      while (isDigit(this.peekOrNull())) this.pos++;
      isFloat = true;
    }
    let text = String.UTF8.decodeUnsafe(this.base + <usize>start, <usize>(this.pos - start));
    if (!isFloat && !overflow) {
      if (positive) {
        this.numberDisplay = "integer `" + text + "`";
        return true;
      }
      // i64 range is -2^63..-1; "-0" and larger magnitudes become floats.
      if (significand != 0 && significand <= <u64>9223372036854775808) {
        this.numberDisplay = "integer `" + text + "`";
        return true;
      }
      if (significand == 0) {
        this.numberDisplay = "floating point `-0.0`";
        return true;
      }
    }
    let value = parseFloat(text);
    if (!isFinite(value)) return this.error("number out of range");
    if (!positive && value == 0) value = -0.0;
    this.numberDisplay = "floating point `" + formatFloat(value) + "`";
    return true;
  }

  /** serde_json's decode_hex_escape for SliceRead. */
  decodeHexEscape(): i32 {
    if (this.len - this.pos < 4) {
      this.pos = this.len;
      this.error("EOF while parsing a string");
      return -1;
    }
    let n = 0;
    let bad = false;
    for (let k = 0; k < 4; k++) {
      let h = hexDigit(<u32>load<u8>(this.base + <usize>(this.pos + k)));
      if (h < 0) bad = true;
      n = (n << 4) | (h & 0xf);
    }
    this.pos += 4;
    if (bad) {
      this.error("invalid escape");
      return -1;
    }
    return n;
  }

  pushCodePoint(n: u32): void {
    let s = this.scratch;
    if (n < 0x80) {
      s.push(n);
    } else if (n < 0x800) {
      s.push(0xc0 | (n >> 6));
      s.push(0x80 | (n & 0x3f));
    } else if (n < 0x10000) {
      s.push(0xe0 | (n >> 12));
      s.push(0x80 | ((n >> 6) & 0x3f));
      s.push(0x80 | (n & 0x3f));
    } else {
      s.push(0xf0 | (n >> 18));
      s.push(0x80 | ((n >> 12) & 0x3f));
      s.push(0x80 | ((n >> 6) & 0x3f));
      s.push(0x80 | (n & 0x3f));
    }
  }

  parseUnicodeEscape(): bool {
    let n = this.decodeHexEscape();
    if (n < 0) return false;
    if (n >= 0xdc00 && n <= 0xdfff) return this.error("lone leading surrogate in hex escape");
    if (n < 0xd800 || n > 0xdbff) {
      this.pushCodePoint(<u32>n);
      return true;
    }
    if (this.pos >= this.len) return this.error("EOF while parsing a string");
    if (this.peek() != 0x5c) {
      this.pos++;
      return this.error("unexpected end of hex escape");
    }
    this.pos++;
    if (this.pos >= this.len) return this.error("EOF while parsing a string");
    if (this.peek() != 0x75) {
      this.pos++;
      return this.error("unexpected end of hex escape");
    }
    this.pos++;
    let n2 = this.decodeHexEscape();
    if (n2 < 0) return false;
    if (n2 < 0xdc00 || n2 > 0xdfff) return this.error("lone leading surrogate in hex escape");
    let cp = ((<u32>(n - 0xd800) << 10) | <u32>(n2 - 0xdc00)) + 0x10000;
    this.pushCodePoint(cp);
    return true;
  }

  parseEscape(): bool {
    if (this.pos >= this.len) return this.error("EOF while parsing a string");
    let c = this.peek();
    this.pos++;
    let s = this.scratch;
    if (c == 0x22) s.push(0x22);
    else if (c == 0x5c) s.push(0x5c);
    else if (c == 0x2f) s.push(0x2f);
    else if (c == 0x62) s.push(0x08);
    else if (c == 0x66) s.push(0x0c);
    else if (c == 0x6e) s.push(0x0a);
    else if (c == 0x72) s.push(0x0d);
    else if (c == 0x74) s.push(0x09);
    else if (c == 0x75) return this.parseUnicodeEscape();
    else return this.error("invalid escape");
    return true;
  }

  /** Parses a string whose opening quote was consumed; the result goes to `str`. */
  parseStr(): bool {
    let s = this.scratch;
    s.clear();
    while (true) {
      if (this.pos >= this.len) return this.error("EOF while parsing a string");
      let c = this.peek();
      if (c == 0x22) {
        this.pos++;
        break;
      } else if (c == 0x5c) {
        this.pos++;
        if (!this.parseEscape()) return false;
      } else if (c < 0x20) {
        this.pos++;
        return this.error("control character (\\u0000-\\u001F) found while parsing a string");
      } else {
        s.push(<u32>c);
        this.pos++;
      }
    }
    let valid = utf8ValidUpTo(s.ptr(), s.length);
    if (valid < s.length) {
      this.err = "invalid unicode code point" + this.positionOf(this.pos, s.length - valid);
      this.pending = false;
      return false;
    }
    this.str = String.UTF8.decodeUnsafe(s.ptr(), <usize>s.length);
    return true;
  }

  /** serde_json's peek_invalid_type: always fails, with the reason. */
  peekInvalidType(expected: string): bool {
    let c = this.peekOrNull();
    let unexpected: string;
    if (c == 0x6e) {
      this.pos++;
      if (!this.parseIdent("ull")) return false;
      unexpected = "null";
    } else if (c == 0x74) {
      this.pos++;
      if (!this.parseIdent("rue")) return false;
      unexpected = "boolean `true`";
    } else if (c == 0x66) {
      this.pos++;
      if (!this.parseIdent("alse")) return false;
      unexpected = "boolean `false`";
    } else if (c == 0x2d) {
      this.pos++;
      if (!this.parseAnyNumber(false)) return false;
      unexpected = this.numberDisplay;
    } else if (isDigit(c)) {
      if (!this.parseAnyNumber(true)) return false;
      unexpected = this.numberDisplay;
    } else if (c == 0x22) {
      this.pos++;
      if (!this.parseStr()) return false;
      unexpected = "string " + debugString(this.str);
    } else if (c == 0x5b) {
      unexpected = "sequence";
    } else if (c == 0x7b) {
      unexpected = "map";
    } else {
      return this.peekError("expected value");
    }
    this.custom("invalid type: " + unexpected + ", expected " + expected);
    this.fixPosition();
    return false;
  }

  // --- sequences and maps -----------------------------------------------------------------

  /** serde_json's SeqAccess::has_next_element; `first` is the SeqAccess state. */
  hasNextElement(first: bool): i32 {
    // Returns 1 (element follows), 0 (end of list, `]` not consumed) or -1 (error).
    let peek = this.parseWhitespace();
    if (peek == EOF) {
      this.peekError("EOF while parsing a list");
      return -1;
    }
    if (peek == 0x5d) return 0;
    if (first) return 1;
    if (peek == 0x2c) {
      this.pos++;
      let next = this.parseWhitespace();
      if (next == 0x5d) {
        this.peekError("trailing comma");
        return -1;
      }
      if (next == EOF) {
        this.peekError("EOF while parsing a value");
        return -1;
      }
      return 1;
    }
    this.peekError("expected `,` or `]`");
    return -1;
  }

  endSeq(): bool {
    let peek = this.parseWhitespace();
    if (peek == 0x5d) {
      this.pos++;
      return true;
    }
    if (peek == 0x2c) {
      this.pos++;
      if (this.parseWhitespace() == 0x5d) return this.peekError("trailing comma");
      return this.peekError("trailing characters");
    }
    if (peek == EOF) return this.peekError("EOF while parsing a list");
    return this.peekError("trailing characters");
  }

  endMap(): bool {
    let peek = this.parseWhitespace();
    if (peek == 0x7d) {
      this.pos++;
      return true;
    }
    if (peek == 0x2c) return this.peekError("trailing comma");
    if (peek == EOF) return this.peekError("EOF while parsing an object");
    return this.peekError("trailing characters");
  }

  /** Runs end_seq/end_map after a visitor, keeping the visitor's error if it failed. */
  finish(visited: bool, isMap: bool): bool {
    let err = this.err;
    let pending = this.pending;
    let ended = isMap ? this.endMap() : this.endSeq();
    if (!visited) {
      this.err = err;
      this.pending = pending;
    }
    if (!visited || !ended) {
      this.fixPosition();
      return false;
    }
    return true;
  }

  /** String (serde_json's deserialize_str); the result goes to `str`. */
  deserializeString(): bool {
    let peek = this.parseWhitespace();
    if (peek == EOF) return this.peekError("EOF while parsing a value");
    if (peek == 0x22) {
      this.pos++;
      return this.parseStr();
    }
    return this.peekInvalidType(EXPECTED_STRING);
  }

  /** (String, String): a two-element sequence; appends to `pairs`. */
  deserializePair(names: Array<string>, values: Array<string>): bool {
    let peek = this.parseWhitespace();
    if (peek == EOF) return this.peekError("EOF while parsing a value");
    if (peek != 0x5b) return this.peekInvalidType(EXPECTED_TUPLE);
    this.pos++;
    let visited = this.visitPair(names, values);
    return this.finish(visited, false);
  }

  visitPair(names: Array<string>, values: Array<string>): bool {
    let has = this.hasNextElement(true);
    if (has < 0) return false;
    if (has == 0) return this.custom("invalid length 0, expected " + EXPECTED_TUPLE);
    if (!this.deserializeString()) return false;
    let name = this.str;
    has = this.hasNextElement(false);
    if (has < 0) return false;
    if (has == 0) return this.custom("invalid length 1, expected " + EXPECTED_TUPLE);
    if (!this.deserializeString()) return false;
    names.push(name);
    values.push(this.str);
    return true;
  }

  /** Vec<(String, String)>: replaces the configured response headers. */
  deserializeHeaders(): bool {
    let peek = this.parseWhitespace();
    if (peek == EOF) return this.peekError("EOF while parsing a value");
    if (peek != 0x5b) return this.peekInvalidType(EXPECTED_SEQUENCE);
    this.pos++;
    let names = new Array<string>();
    let values = new Array<string>();
    let visited = this.visitHeaders(names, values);
    if (!this.finish(visited, false)) return false;
    this.config.response_header_names = names;
    this.config.response_header_values = values;
    return true;
  }

  visitHeaders(names: Array<string>, values: Array<string>): bool {
    let first = true;
    while (true) {
      let has = this.hasNextElement(first);
      if (has < 0) return false;
      if (has == 0) return true;
      first = false;
      if (!this.deserializePair(names, values)) return false;
    }
    return true;
  }

  parseObjectColon(): bool {
    let peek = this.parseWhitespace();
    if (peek == 0x3a) {
      this.pos++;
      return true;
    }
    if (peek == EOF) return this.peekError("EOF while parsing an object");
    return this.peekError("expected `:`");
  }

  /** The struct's visit_map (serde derive, deny_unknown_fields, container default). */
  visitMap(): bool {
    let first = true;
    let seenRequestHeader = false;
    let seenResponseHeaders = false;
    while (true) {
      // has_next_key
      let peek = this.parseWhitespace();
      if (peek == EOF) return this.peekError("EOF while parsing an object");
      if (peek == 0x7d) return true;
      if (first) {
        first = false;
        if (peek != 0x22) return this.peekError("key must be a string");
      } else if (peek == 0x2c) {
        this.pos++;
        let next = this.parseWhitespace();
        if (next == 0x7d) return this.peekError("trailing comma");
        if (next == EOF) return this.peekError("EOF while parsing a value");
        if (next != 0x22) return this.peekError("key must be a string");
      } else {
        return this.peekError("expected `,` or `}`");
      }
      // The key (serde_json's MapKey), then the field identifier.
      this.pos++;
      if (!this.parseStr()) return false;
      let key = this.str;
      if (key == "request_header") {
        if (seenRequestHeader) return this.custom("duplicate field `request_header`");
        seenRequestHeader = true;
        if (!this.parseObjectColon()) return false;
        if (!this.deserializeString()) return false;
        this.config.request_header = this.str;
      } else if (key == "response_headers") {
        if (seenResponseHeaders) return this.custom("duplicate field `response_headers`");
        seenResponseHeaders = true;
        if (!this.parseObjectColon()) return false;
        if (!this.deserializeHeaders()) return false;
      } else {
        return this.custom(
          "unknown field `" + key + "`, expected `request_header` or `response_headers`",
        );
      }
    }
    return true;
  }

  /** The struct's visit_seq: fields in order, missing ones keep their defaults. */
  visitSeq(): bool {
    let has = this.hasNextElement(true);
    if (has < 0) return false;
    if (has == 0) return true;
    if (!this.deserializeString()) return false;
    this.config.request_header = this.str;
    has = this.hasNextElement(false);
    if (has < 0) return false;
    if (has == 0) return true;
    return this.deserializeHeaders();
  }

  /** serde_json's deserialize_struct for FilterConfig. */
  deserializeConfig(): bool {
    let peek = this.parseWhitespace();
    if (peek == EOF) return this.peekError("EOF while parsing a value");
    if (peek == 0x7b) {
      this.pos++;
      let visited = this.visitMap();
      return this.finish(visited, true);
    }
    if (peek == 0x5b) {
      this.pos++;
      let visited = this.visitSeq();
      return this.finish(visited, false);
    }
    return this.peekInvalidType(EXPECTED_STRUCT);
  }

  /** serde_json's Deserializer::end: only whitespace may follow. */
  end(): bool {
    if (this.parseWhitespace() != EOF) return this.peekError("trailing characters");
    return true;
  }
}
