// biome-ignore lint/suspicious/noControlCharactersInRegex: the colour codes hvctl's Style writes
const OUR_COLOURS = /\x1b\[(?:0|2|31|32|33)m/y;
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Options of {@link terminalSafe}. */
export interface TerminalSafeOptions {
  /** Keep line feeds and tabs (whole outputs); a table cell or field value escapes them too. */
  readonly keepLines?: boolean;
  /** Keep the colour codes hvctl's Style writes (and only those); default false. */
  readonly keepColours?: boolean;
}

/**
 * Text that cannot drive a terminal: C0 and C1 control characters (ESC, CR,
 * BEL, ...), DEL and the bidirectional overrides are shown as `\xNN` or
 * `\u{NNNN}` instead of being sent. Names come from node reports, tokens and
 * audit records, so everything hvctl prints as text passes through here,
 * and so does every field of the daemon's log lines for people.
 */
export function terminalSafe(text: string, options: TerminalSafeOptions = {}): string {
  return text.replace(UNSAFE, (ch, at: number) => {
    if (options.keepLines && (ch === "\n" || ch === "\t")) return ch;
    if (options.keepColours && ch === "\x1b") {
      OUR_COLOURS.lastIndex = at;
      if (OUR_COLOURS.test(text)) return ch;
    }
    const code = ch.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u{${code.toString(16).padStart(4, "0")}}`;
  });
}
