import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sourceGroupOf } from "./source-group.js";

describe("sourceGroupOf", () => {
  it("puts every address of one IPv6 /64, however written, in one group", () => {
    const same = [
      "2001:db8:1:2::1",
      "2001:db8:1:2::ffff",
      "2001:db8:1:2:aaaa:bbbb:cccc:dddd",
      "2001:0DB8:0001:0002:0000:0000:0000:0009",
      "2001:db8:1:2:0:0:0:7",
      "2001:db8:1:2::1.2.3.4",
    ];
    for (const a of same) assert.equal(sourceGroupOf(a), "2001:db8:1:2::/64", a);
    // The `::` run before the fourth group: the groups after it still land where they belong.
    assert.equal(sourceGroupOf("2001:db8::4:5:6:7:8"), "2001:db8:0:4::/64");
    assert.equal(sourceGroupOf("2001:db8::5:6:7:8"), "2001:db8::/64");
    assert.equal(sourceGroupOf("1::2:3:4:5:6:7"), "1:0:2:3::/64");
    assert.equal(sourceGroupOf("::"), "::/64");
    assert.equal(sourceGroupOf("::1"), "::/64");
    assert.equal(sourceGroupOf("1::"), "1::/64");
    assert.equal(sourceGroupOf("fe80::1"), "fe80::/64");
  });

  it("keeps different /64s apart, down to the last bit of the prefix", () => {
    const groups = new Set(
      [
        "2001:db8:1:2::1",
        "2001:db8:1:3::1",
        "2001:db8:1:2:1::1",
        "2001:db8:2:2::1",
        "2001:db9:1:2::1",
        "3001:db8:1:2::1",
        "2001:db8:1:0::1",
      ].map(sourceGroupOf),
    );
    // 2001:db8:1:2:1::1 is in 2001:db8:1:2::/64 too: six groups for seven addresses.
    assert.equal(groups.size, 6, [...groups].join(" "));
    assert.notEqual(sourceGroupOf("2001:db8:1:2::1"), sourceGroupOf("2001:db8:1:2::1%eth0"));
  });

  it("counts an IPv4-mapped IPv6 address as its IPv4 address, and IPv4 per address", () => {
    assert.equal(sourceGroupOf("::ffff:192.0.2.7"), "192.0.2.7");
    assert.equal(sourceGroupOf("::FFFF:c000:0207"), "192.0.2.7");
    assert.equal(sourceGroupOf("0:0:0:0:0:ffff:192.0.2.7"), "192.0.2.7");
    assert.equal(sourceGroupOf("192.0.2.7"), "192.0.2.7");
    assert.notEqual(sourceGroupOf("192.0.2.8"), sourceGroupOf("192.0.2.7"));
    // Not mapped: ::ffff:0:0/96 only (the last 32 bits of other /96s are no IPv4 address).
    assert.equal(sourceGroupOf("::fffe:192.0.2.7"), "::/64");
    assert.equal(sourceGroupOf("64:ff9b::192.0.2.7"), "64:ff9b::/64");
  });

  it("keeps a link-local address's zone (another link is another source)", () => {
    assert.equal(sourceGroupOf("fe80::1%eth0"), "fe80::/64%eth0");
    assert.equal(sourceGroupOf("FE80::abcd:1%eth0"), "fe80::/64%eth0");
    assert.equal(sourceGroupOf("fe80::1%2"), "fe80::/64%2");
  });

  it("leaves what is no address as it is", () => {
    for (const a of ["", "localhost", "2001:db8::1::2", "[::1]", "1.2.3.256", "unix:/run/x"])
      assert.equal(sourceGroupOf(a), a);
  });
});
