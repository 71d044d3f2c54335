import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type CallContext, RpcError } from "../core/index.js";
import { createWatchQuota } from "./watch-quota.js";

/** Just what the quota reads of a call: who calls, and in which tenant. */
const caller = (id: string, tenant?: string) =>
  ({
    principal: { id, method: "apikey", roles: [] },
    tenant,
    peer: { address: "127.0.0.1:1" },
  }) as unknown as CallContext;

const refused = (f: () => unknown) =>
  assert.throws(f, (e: unknown) => e instanceof RpcError && e.reason === "TOO_MANY_WATCHES");

describe("watch quota", () => {
  it("holds one caller to its limit until a watch closes", () => {
    const quota = createWatchQuota({ perPrincipal: 2, perTenant: 10 });
    const a = quota.open(caller("key:a", "acme"));
    quota.open(caller("key:a", "acme"));
    refused(() => quota.open(caller("key:a", "acme")));
    // Another caller is not held back by the first one's watches.
    quota.open(caller("key:b", "acme"));
    a();
    a(); // a second release changes nothing
    quota.open(caller("key:a", "acme"));
    refused(() => quota.open(caller("key:a", "acme")));
  });

  it("holds a tenant's callers together to the tenant's limit (keys it mints do not multiply it)", () => {
    const quota = createWatchQuota({ perPrincipal: 5, perTenant: 3 });
    quota.open(caller("key:1", "acme"));
    quota.open(caller("key:2", "acme"));
    const third = quota.open(caller("key:3", "acme"));
    refused(() => quota.open(caller("key:4", "acme")));
    // A refused open took nothing from its caller's own count.
    third();
    quota.open(caller("key:4", "acme"));
    // Other tenants and cluster-wide callers have their own room.
    quota.open(caller("key:9", "globex"));
    quota.open(caller("admin"));
  });
});
