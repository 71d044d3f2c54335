/**
 * Layers configuration sources: `over`'s keys replace `base`'s, mappings
 * merge key by key, arrays and scalars replace, undefined values are
 * skipped (an unset flag leaves the file's value). The daemon and the agent
 * merge file, environment and flags with it.
 */
export function mergeConfigLayers(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? mergeConfigLayers(b, v) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
