/**
 * A certificate's serial as the cluster compares and stores it: lower-case
 * hex without leading zeros (Node reports upper case, sometimes padded).
 */
export function serialKey(serialHex: string): string {
  return serialHex.toLowerCase().replace(/^0+(?=.)/, "");
}
