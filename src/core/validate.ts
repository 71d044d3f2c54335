import { RpcError } from "./rpc-error.js";

/** Rules for one untrusted string field. */
export interface StringRule {
  /** Field path as the client knows it, for the error message (`id.id`). */
  readonly field: string;
  readonly required?: boolean;
  /** Maximum length in characters (default 256). */
  readonly max?: number;
  readonly pattern?: RegExp;
  /** Human description of the pattern, for the error message. */
  readonly patternHint?: string;
}

/** Node and VM ids: DNS-label-like, 1-63 characters. */
export const ID_PATTERN = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
/** Hint shown with {@link ID_PATTERN} errors. */
export const ID_HINT =
  "1-63 lower-case letters, digits, '.', '_' or '-', starting and ending alphanumeric";

/** Checks one string field and throws INVALID_ARGUMENT naming the field when it is wrong. */
export function checkString(value: string, rule: StringRule): void {
  const max = rule.max ?? 256;
  if (value === "") {
    if (rule.required) throw invalid(`${rule.field}: required`);
    return;
  }
  if (value.length > max) throw invalid(`${rule.field}: longer than ${max} characters`);
  if (rule.pattern !== undefined && !rule.pattern.test(value)) {
    throw invalid(`${rule.field}: must be ${rule.patternHint ?? `like ${rule.pattern.source}`}`);
  }
}

/** Checks a number lies in [min, max] and is finite. */
export function checkNumber(value: number, field: string, min: number, max: number): void {
  if (!Number.isFinite(value) || value < min || value > max) {
    throw invalid(`${field}: must be between ${min} and ${max}`);
  }
}

/** An INVALID_ARGUMENT error with a client-safe message naming the field. */
export function invalid(message: string): RpcError {
  return new RpcError("INVALID_ARGUMENT", { message });
}
