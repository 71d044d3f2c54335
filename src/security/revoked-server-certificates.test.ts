import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { revokedServerSerials } from "./revoked-server-certificates.js";

describe("the revoked server certificates told to agents", () => {
  const now = 1_000_000;

  it("lists revoked server certificates and those of unknown kind, not clients' nor expired ones", () => {
    const serials = revokedServerSerials(
      [
        { serial: "a1", revokedAtMs: 10, kind: "server", notAfterMs: now + 1 },
        { serial: "b2", revokedAtMs: 20, kind: "client", notAfterMs: now + 1 },
        { serial: "c3", revokedAtMs: 30, kind: "server", notAfterMs: now },
        { serial: "d4", revokedAtMs: 40 },
        { serial: "e5", revokedAtMs: 50, kind: "", notAfterMs: now + 1 },
      ],
      now,
    );
    assert.deepEqual(serials, ["e5", "d4", "a1"]);
  });

  it("past the bound keeps the newest revocations, never refusing the list", () => {
    const entries = Array.from({ length: 12 }, (_, i) => ({
      serial: i.toString(16),
      revokedAtMs: i,
      kind: "server",
      notAfterMs: now + 1,
    }));
    assert.deepEqual(revokedServerSerials(entries, now, 3), ["b", "a", "9"]);
  });
});
