import { type DescField, type DescMessage, getOption, hasOption } from "@bufbuild/protobuf";
import { type FieldRules, rules as rulesExtension } from "../gen/debvisor/v1/validate_pb.js";

/** One broken rule: the field path as the client wrote it, and what is wrong. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

interface PlannedField {
  readonly field: DescField;
  readonly rules: FieldRules | undefined;
  /** For message, list-of-message and map-of-message fields whose type has rules below it. */
  readonly nested: DescMessage | undefined;
}

/** At most this many violations are reported per request. */
const MAX_VIOLATIONS = 20;
/** Deeper nesting than this is not validated further (no type here nests that deep). */
const MAX_DEPTH = 16;

const plans = new Map<DescMessage, PlannedField[]>();
const patterns = new Map<string, RegExp>();

function planOf(desc: DescMessage): PlannedField[] {
  let plan = plans.get(desc);
  if (plan !== undefined) return plan;
  plan = [];
  plans.set(desc, plan); // guards recursive types while planning
  for (const field of desc.fields) {
    const rules = hasOption(field, rulesExtension) ? getOption(field, rulesExtension) : undefined;
    const msgType = field.message;
    const nested = msgType !== undefined && hasRulesBelow(msgType, new Set()) ? msgType : undefined;
    if (rules !== undefined || nested !== undefined) plan.push({ field, rules, nested });
  }
  return plan;
}

function hasRulesBelow(desc: DescMessage, seen: Set<DescMessage>): boolean {
  if (seen.has(desc)) return false;
  seen.add(desc);
  return desc.fields.some(
    (f) =>
      hasOption(f, rulesExtension) || (f.message !== undefined && hasRulesBelow(f.message, seen)),
  );
}

function regex(source: string): RegExp {
  let re = patterns.get(source);
  if (re === undefined) {
    re = new RegExp(source, "u");
    patterns.set(source, re);
  }
  return re;
}

/**
 * Checks a decoded request against the rules declared on its fields (the
 * `debvisor.v1.rules` field option) and returns the violations, paths first
 * in field order. One generic pass for every method: the rules live next to
 * the message definitions and nowhere else.
 */
export function validateMessage(desc: DescMessage, message: unknown): FieldViolation[] {
  const out: FieldViolation[] = [];
  visit(desc, message as Record<string, unknown>, "", 0, out);
  return out;
}

function visit(
  desc: DescMessage,
  msg: Record<string, unknown>,
  prefix: string,
  depth: number,
  out: FieldViolation[],
): void {
  if (depth > MAX_DEPTH) return;
  for (const { field, rules, nested } of planOf(desc)) {
    if (out.length >= MAX_VIOLATIONS) return;
    const path = prefix + field.name;
    const value = fieldValue(field, msg);
    const add = (description: string) => out.push({ field: path, description });
    switch (field.fieldKind) {
      case "scalar":
      case "enum":
        if (rules !== undefined) checkScalar(field, rules, value, add);
        break;
      case "message":
        if (value === undefined) {
          if (rules?.required) add("required");
        } else if (nested !== undefined)
          visit(nested, value as Record<string, unknown>, `${path}.`, depth + 1, out);
        break;
      case "list": {
        const list = value as unknown[];
        if (rules?.required && list.length === 0) add("at least one entry required");
        if (rules !== undefined && rules.maxItems > 0 && list.length > rules.maxItems)
          add(`at most ${rules.maxItems} entries`);
        if (nested !== undefined) {
          for (const [i, item] of list.slice(0, 1000).entries()) {
            visit(nested, item as Record<string, unknown>, `${path}[${i}].`, depth + 1, out);
          }
        }
        break;
      }
      case "map": {
        const entries = Object.entries(value as Record<string, unknown>);
        if (rules !== undefined) {
          if (rules.maxItems > 0 && entries.length > rules.maxItems)
            add(`at most ${rules.maxItems} entries`);
          for (const [k, v] of entries.slice(0, 1000)) {
            if (rules.keyPattern !== "" && !regex(rules.keyPattern).test(k))
              out.push({
                field: `${path}[${JSON.stringify(k.slice(0, 64))}]`,
                description: "key does not match the key pattern",
              });
            if (typeof v === "string" && rules.maxLen > 0 && v.length > rules.maxLen)
              out.push({
                field: `${path}[${JSON.stringify(k.slice(0, 64))}]`,
                description: `at most ${rules.maxLen} characters`,
              });
          }
        }
        if (nested !== undefined)
          for (const [k, v] of entries.slice(0, 1000))
            visit(
              nested,
              v as Record<string, unknown>,
              `${path}[${JSON.stringify(k)}].`,
              depth + 1,
              out,
            );
        break;
      }
    }
  }
}

function fieldValue(field: DescField, msg: Record<string, unknown>): unknown {
  if (field.oneof !== undefined) {
    const o = msg[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
    return o?.case === field.localName ? o.value : undefined;
  }
  return msg[field.localName];
}

function checkScalar(
  field: DescField,
  rules: FieldRules,
  value: unknown,
  add: (d: string) => void,
): void {
  if (field.fieldKind === "enum") {
    const n = value as number | undefined;
    if (rules.definedEnum && n !== undefined && !field.enum.values.some((v) => v.number === n))
      add(`${n} is not a defined ${field.enum.name} value`);
    return;
  }
  if (typeof value === "string") {
    if (value === "") {
      if (rules.required) add("required");
      return;
    }
    if (rules.maxLen > 0 && value.length > rules.maxLen) add(`at most ${rules.maxLen} characters`);
    else if (rules.pattern !== "" && !regex(rules.pattern).test(value))
      add(
        rules.patternHint !== "" ? `must be ${rules.patternHint}` : `must match ${rules.pattern}`,
      );
    return;
  }
  if (typeof value === "number" || typeof value === "bigint") {
    const n = Number(value);
    if (rules.hasRange && (!Number.isFinite(n) || n < rules.min || n > rules.max))
      add(`must be between ${rules.min} and ${rules.max}`);
    else if (rules.required && n === 0) add("required");
    return;
  }
  if (typeof value === "boolean" && rules.required && !value) add("required");
}
