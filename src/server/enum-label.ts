/**
 * Metric label values from protobuf enums, shared by the cluster metrics'
 * gauges and counters so both spell a state the same way.
 */

/** Lower-case label value of an enum member (`NOT_READY` -> `not_ready`). */
export function enumLabel(names: Record<number, string>, value: number): string {
  return (names[value] ?? "unspecified").toLowerCase();
}
