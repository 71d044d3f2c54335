import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { grantsCover, isGrant, isPermission, permissionMatches } from "./permission.js";

// A tiny alphabet makes collisions (storage vs storagex, shared prefixes) common.
const segment = fc.constantFrom(
  "storage",
  "storagex",
  "node",
  "snapshot",
  "list",
  "create",
  "a",
  "ab",
);
const permission = fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => s.join(":"));
const grant = fc.oneof(
  fc.constant("*"),
  permission,
  permission.map((p) => `${p}:*`),
);

/** The reference: compare segment lists. */
function reference(g: string, p: string): boolean {
  if (g === "*") return true;
  const gs = g.split(":");
  const ps = p.split(":");
  if (gs[gs.length - 1] === "*") {
    const base = gs.slice(0, -1);
    return ps.length >= base.length && base.every((s, i) => ps[i] === s);
  }
  return g === p;
}

describe("permissionMatches", () => {
  it("agrees with a segment-by-segment reference on random grants and permissions", () => {
    fc.assert(
      fc.property(grant, permission, (g, p) => permissionMatches(g, p) === reference(g, p)),
      { numRuns: 5000 },
    );
  });

  it("does not let storage:* match storagex:read", () => {
    assert.equal(permissionMatches("storage:*", "storagex:read"), false);
    assert.equal(permissionMatches("storage:*", "storage:snapshot:create"), true);
    assert.equal(permissionMatches("storage:clone:*", "storage:clone"), true);
    assert.equal(permissionMatches("node:list", "node:list:all"), false);
  });

  it("lets * alone cover every permission", () => {
    fc.assert(fc.property(permission, (p) => permissionMatches("*", p)));
  });

  it("never matches when a segment differs, however the strings share a prefix", () => {
    fc.assert(
      fc.property(permission, segment, segment, (base, s1, s2) => {
        fc.pre(s1 !== s2);
        return (
          !permissionMatches(`${base}:${s1}:*`, `${base}:${s2}:x`) &&
          !permissionMatches(`${base}:${s1}`, `${base}:${s2}`)
        );
      }),
    );
  });
});

describe("grantsCover (no escalation)", () => {
  it("only says a grant is covered when every permission it grants is granted by what is held", () => {
    fc.assert(
      fc.property(
        fc.array(grant, { maxLength: 4 }),
        grant,
        fc.array(permission, { minLength: 20, maxLength: 20 }),
        (held, wanted, probes) => {
          if (!grantsCover(held, wanted)) return true;
          return probes.every(
            (p) => !permissionMatches(wanted, p) || held.some((h) => permissionMatches(h, p)),
          );
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("refuses the obvious escalations", () => {
    assert.equal(grantsCover(["node:list"], "node:*"), false);
    assert.equal(grantsCover(["auth:*"], "*"), false);
    assert.equal(grantsCover(["storage:snapshot:*"], "storage:*"), false);
    assert.equal(grantsCover(["storage:*"], "storage:snapshot:*"), true);
    assert.equal(grantsCover(["*"], "anything:at:all"), true);
  });
});

describe("permission syntax", () => {
  for (const [name, text, perm, g] of [
    ["ok-plain", "node:list", true, true],
    ["ok-wildcard", "storage:*", false, true],
    ["ok-star", "*", false, true],
    ["fail-empty-segment", "node::list", false, false],
    ["fail-upper", "Node:list", false, false],
    ["fail-inner-star", "node:*:list", false, false],
  ] as const) {
    it(`${name}: ${text}`, () => {
      assert.equal(isPermission(text), perm);
      assert.equal(isGrant(text), g);
    });
  }
});
