import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { silentLogger } from "../core/index.js";
import { createCertificateAuthority, loadCertificateAuthority } from "../pki/index.js";
import { scheduleRenewal } from "./certificate-renewal.js";

const DAY = 86_400_000;

/** An agent directory holding a fresh certificate of `days` days. */
async function agentDir(days: number) {
  const dir = mkdtempSync(join(tmpdir(), "dv-agent-renewal-"));
  const root = await createCertificateAuthority({ commonName: "test CA" });
  const ca = await loadCertificateAuthority({ certPem: root.certPem, keyPem: root.keyPem });
  const cert = await ca.issue({ commonName: "node-01", usage: "client", validityDays: days });
  writeFileSync(join(dir, "node.crt"), cert.certPem);
  return dir;
}

/** Renewal planned for `dir` with no stream: a renewal that is due asks for one (counted), then waits a minute. */
function scheduled(dir: string) {
  const stop = new AbortController();
  let asked = 0;
  scheduleRenewal(
    { dir, renewAtFraction: 0.66, tlsServerName: undefined },
    silentLogger,
    () => {
      asked++;
      return undefined;
    },
    stop.signal,
  );
  return { asked: () => asked, stop: () => stop.abort() };
}

describe("scheduleRenewal (the agent's own certificate)", () => {
  it("does not renew a one-year certificate when the longest timer (24.8 days) fires", async (t) => {
    const dir = await agentDir(365);
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: Date.now() });
    const r = scheduled(dir);
    try {
      // A day at a time (a mocked tick fires no timer set during it, so each 24.8-day step
      // fires at the end of its day: a few days late in all).
      const days = (n: number) => {
        for (let i = 0; i < n; i++) t.mock.timers.tick(DAY);
      };
      days(25);
      assert.equal(r.asked(), 0, "renewed after 25 days of a 365-day certificate");
      days(215);
      assert.equal(r.asked(), 0, "renewed before two thirds of its life");
      days(5);
      assert.ok(r.asked() >= 1, "due at 0.66 of its life (241 days; looked at on day 245)");
    } finally {
      r.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("renews by the clock when the clock is set right after the plan (a host booted with its clock behind)", async (t) => {
    // Found by an adversarial review: the wait was counted by timers alone, so a plan made
    // while the clock was a year behind waited a year after the clock was set right, and the
    // 30-day certificate expired in service (the node locked out until it enrolled again).
    const dir = await agentDir(30);
    const now = Date.now();
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: now - 365 * DAY });
    const r = scheduled(dir);
    try {
      t.mock.timers.setTime(now); // time sync sets the clock right, no timer fires
      for (let i = 0; i < 25; i++) t.mock.timers.tick(DAY);
      assert.ok(r.asked() >= 1, "asked for a renewal before the certificate's 30 days end");
    } finally {
      r.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("plans again a minute later when the certificate file cannot be read, never throwing", async (t) => {
    const dir = await agentDir(30);
    const cert = join(dir, "node.crt");
    const pem = readFileSync(cert, "utf8");
    rmSync(cert);
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: Date.now() });
    const r = scheduled(dir);
    try {
      t.mock.timers.tick(60_000); // read again: still missing, planned again
      writeFileSync(cert, pem);
      t.mock.timers.tick(60_000); // read: due in 19.8 days
      assert.equal(r.asked(), 0);
      for (let i = 0; i < 20; i++) t.mock.timers.tick(DAY);
      assert.ok(r.asked() >= 1, "the renewal is due once the file is back");
    } finally {
      r.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
