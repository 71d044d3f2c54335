import { invalid } from "./validate.js";

/** One requirement of a label selector. */
export interface LabelRequirement {
  readonly key: string;
  /** `=` (equal), `!=` (absent or different), `exists`, `!exists`. */
  readonly op: "=" | "!=" | "exists" | "!exists";
  readonly value: string;
}

/** A parsed label selector: every requirement must hold. */
export type LabelSelector = readonly LabelRequirement[];

// The label key and value rules of NodeInfo.labels (keys), values as Kubernetes allows them.
const KEY = /^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$/;
const VALUE = /^([a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?$/;
/** Requirements one selector may hold. */
const MAX_REQUIREMENTS = 32;

/**
 * Parses a selector as Kubernetes writes one, `key=value,key!=value,key,!key`
 * (`==` is `=`; spaces around parts are ignored; "" selects everything).
 * Bad input is INVALID_ARGUMENT naming `field` and the part at fault.
 */
export function parseLabelSelector(text: string, field = "selector"): LabelSelector {
  const out: LabelRequirement[] = [];
  if (text.trim() === "") return out;
  const parts = text.split(",");
  if (parts.length > MAX_REQUIREMENTS)
    throw invalid(`${field}: at most ${MAX_REQUIREMENTS} requirements`);
  for (const raw of parts) {
    const part = raw.trim();
    const m = /^(!?)([^=!]+?)\s*(?:(==|=|!=)\s*(.*))?$/.exec(part);
    const bad = (why: string) =>
      invalid(`${field}: "${part}": ${why} (key=value, key!=value, key or !key)`);
    if (m === null) throw bad("not a requirement");
    const [, not, key = "", op, value = ""] = m;
    if (!KEY.test(key)) throw bad(`"${key}" is not a label key`);
    if (op === undefined) {
      out.push({ key, op: not === "!" ? "!exists" : "exists", value: "" });
      continue;
    }
    if (not === "!") throw bad("! goes before a key alone");
    if (!VALUE.test(value)) throw bad(`"${value}" is not a label value`);
    out.push({ key, op: op === "!=" ? "!=" : "=", value });
  }
  return out;
}

/** Whether `value` is a label value a selector can name (empty, or 1-63 of letters, digits, `-_.`, alphanumeric at the ends). */
export function isLabelValue(value: string): boolean {
  return VALUE.test(value);
}

/** Whether `labels` satisfy every requirement of `selector`. */
export function matchesLabels(
  selector: LabelSelector,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  return selector.every((r) => {
    const has = labels !== undefined && Object.hasOwn(labels, r.key);
    const v = has ? labels[r.key] : undefined;
    switch (r.op) {
      case "=":
        return has && v === r.value;
      case "!=":
        return !has || v !== r.value;
      case "exists":
        return has;
      case "!exists":
        return !has;
    }
    return false;
  });
}
