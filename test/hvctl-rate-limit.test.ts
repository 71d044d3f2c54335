import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { runHvctlInProcess } from "./helpers/hvctl-in-process.js";

/**
 * hvctl and the server's rate limits: a call refused by a limit was refused
 * before it ran, so hvctl tries it again after the server's retry-after
 * when that is short (as a busy CI job's many calls meet it), and gives up
 * with the advice when it is long.
 */
describe("hvctl when rate limited", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const hvctl = (...args: string[]) =>
    runHvctlInProcess(["--config", join(dir, "hvctl.yaml"), ...args], {
      ...process.env,
      DEBVISOR_CONFIG: "",
      DEBVISOR_CONTEXT: "",
      DEBVISOR_SERVER: "",
      DEBVISOR_TOKEN: "",
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-hvctl-rl-"));
    // A ListNodes takes the whole bucket, full again 1.8 s later (the retry-after of a refusal,
    // short enough for hvctl to wait out). Of three lists at once one runs and two are refused
    // unless each reaches the daemon 1.8 s after the one before, which a loaded machine does
    // not come near. (Ten calls at once and one more every 200 ms did: spread over a few hundred
    // milliseconds, the refill let all but one through.)
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perPrincipal: { ratePerSecond: 5, burst: 9 },
        perRole: {},
        methodCost: { "/debvisor.v1.NodeService/ListNodes": 9 },
      },
    });
    // Whatever start-up spent is back: the bucket refills in 1.8 s, whatever the load.
    await new Promise((r) => setTimeout(r, 2000));
  });
  after(() => daemon?.kill());

  it("calls refused by a short rate limit are tried again and succeed", async () => {
    const runs = await Promise.all(
      Array.from({ length: 3 }, () => hvctl("-o", "json", "node", "list")),
    );
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    // The server refused some, which hvctl waited out: ListNodes answered RESOURCE_EXHAUSTED.
    const metrics = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
    const refused = metrics
      .split("\n")
      .filter(
        (l) =>
          l.includes("grpc_server_handled_total{") &&
          l.includes('grpc_method="ListNodes"') &&
          l.includes('grpc_code="ResourceExhausted"'),
      )
      .reduce((n, l) => n + Number(l.split(" ").at(-1)), 0);
    assert.ok(refused >= 2, `ListNodes refused ${refused} times, and each tried again`);
  });
});

describe("hvctl when rate limited for long", () => {
  let dir: string;
  let daemon: DaemonProcess;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-hvctl-rl-"));
    // Ten calls at once, then one every 10 s: too long to wait for.
    daemon = await startDevDaemon(dir, {
      rateLimit: { perPrincipal: { ratePerSecond: 0.1, burst: 10 }, perRole: {} },
    });
  });
  after(() => daemon?.kill());

  it("gives up at once with the advice", async () => {
    const run = () =>
      runHvctlInProcess(["--config", join(dir, "hvctl.yaml"), "node", "list"], {
        ...process.env,
        DEBVISOR_CONFIG: "",
        DEBVISOR_CONTEXT: "",
        DEBVISOR_SERVER: "",
        DEBVISOR_TOKEN: "",
      });
    const runs = await Promise.all(Array.from({ length: 12 }, run));
    const refused = runs.find((r) => r.code !== 0);
    assert.ok(refused, "some were refused");
    assert.notEqual(refused.code, 0);
    assert.match(
      refused.stderr,
      /rate limit exceeded.*retry in 1\ds|rate limit exceeded.*retry in \ds/,
    );
  });
});
