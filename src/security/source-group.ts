import { BlockList, isIPv4, isIPv6, SocketAddress } from "node:net";

/** IPv4-mapped IPv6 (`::ffff:a.b.c.d`): an IPv4 client as a dual-stack socket reports it. */
const IPV4_MAPPED = new BlockList();
IPV4_MAPPED.addSubnet("::ffff:0:0", 96, "ipv6");

/** The eight 16-bit groups of an address `SocketAddress` printed (lowercase, `::` at most once). */
function groupsOf(canonical: string): string[] {
  const [head = "", tail] = canonical.split("::");
  // A trailing dotted quad is the last two groups; it never reaches the first four.
  const parts = (s: string) =>
    s === "" ? [] : s.split(":").flatMap((p) => (p.includes(".") ? ["", ""] : [p]));
  const left = parts(head);
  const right = tail === undefined ? [] : parts(tail);
  return [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
}

/**
 * The source a rate limit counts an address (no port) against: an IPv4
 * address itself; an IPv6 address's /64 (one subscriber's network: a host
 * picks any address in it at will), as `2001:db8:1:2::/64`, with its zone id
 * (`%eth0`, a link) kept; an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) as
 * the IPv4 address, so one client is one source on either kind of socket.
 * Any spelling of an address (`::` or not, leading zeros, upper case) gives
 * the same group. Anything else (no address at all) is returned as it is.
 */
export function sourceGroupOf(address: string): string {
  if (isIPv4(address) || !isIPv6(address)) return address;
  const zoneAt = address.indexOf("%");
  const zone = zoneAt < 0 ? "" : address.slice(zoneAt);
  const bare = zoneAt < 0 ? address : address.slice(0, zoneAt);
  const canonical = new SocketAddress({ address: bare, family: "ipv6" }).address;
  if (IPV4_MAPPED.check(canonical, "ipv6")) return canonical.slice("::ffff:".length);
  const prefix = `${groupsOf(canonical).slice(0, 4).join(":")}::`;
  return `${new SocketAddress({ address: prefix, family: "ipv6" }).address}/64${zone}`;
}
