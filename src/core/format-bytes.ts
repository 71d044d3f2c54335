const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** A byte count in binary units with one decimal: 512 B, 1.5 KiB, 1.2 GiB. */
export function formatBytes(bytes: number | bigint): string {
  let n = Number(bytes);
  let u = 0;
  while (n >= 1024 && u < UNITS.length - 1) {
    n /= 1024;
    u++;
  }
  if (u === 0) return `${n} B`;
  return `${n >= 100 ? n.toFixed(0) : n.toFixed(1)} ${UNITS[u]}`;
}
