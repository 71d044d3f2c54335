// What a runner key (`runners/<id>`) holds: the runner's id and the serial
// of the server certificate that control-plane process serves. Older daemons
// wrote the bare id (or `host:pid`), and a daemon of a later version may
// write more: the value is read defensively, anything else is no serial.

/** Where the runner keys are (one per live control-plane process, on its lease). */
export const RUNNERS_PREFIX = "runners/";

/** A serial as {@link serialKey} spells it: lower-case hex without leading zeros. */
const SERIAL = /^[0-9a-f]{1,64}$/;

/** The value of the runner key of `id` serving the certificate `serving`. */
export function encodeRunnerValue(id: string, serving: string | undefined): string {
  return JSON.stringify(serving === undefined ? { id } : { id, serving });
}

/** The serving serial in a runner key's value; undefined when it holds none (or none readable). */
export function servingSerialOf(value: Uint8Array): string | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(value));
  } catch {
    return undefined; // an older daemon's bare id
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const serving = (parsed as { serving?: unknown }).serving;
  return typeof serving === "string" && SERIAL.test(serving) ? serving : undefined;
}
