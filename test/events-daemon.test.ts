import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../src/cli/index.js";
import { type DaemonProcess, HVCTL_BIN, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { runHvctlInProcess } from "./helpers/hvctl-in-process.js";

interface EventJson {
  type: string;
  objectKind: string;
  objectId: string;
  message: string;
  reason: string;
  tenant: string;
  revision: string;
}

/**
 * Events through the built hvctl against one dev daemon: node-03 is cut off
 * after a few seconds (its heartbeats stop, then it fences itself), and the
 * failover controller is off, so a manual failover of its VM is refused
 * first because it is still ready.
 */
describe("events: hvctl describe and hvctl events against a dev daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  const env = { NO_COLOR: "1" };
  const hvctl = (...args: string[]) =>
    runHvctlInProcess(["--config", join(dir, "hvctl.yaml"), ...args], env);
  const ok = async (...args: string[]) => {
    const r = await hvctl(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const events = async (...args: string[]) =>
    (JSON.parse(await ok("events", "-o", "json", ...args)) as { events: EventJson[] }).events;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-events-daemon-"));
    daemon = await startDevDaemon(dir, {
      simulation: {
        migrationMs: 1200,
        faults: [{ kind: "partition", node: "node-03", afterMs: 12_000 }],
      },
      cluster: {
        heartbeatIntervalMs: 1000,
        heartbeatMissedIntervals: 2,
        fenceDelayMs: 3000,
        failover: { enabled: false, intervalMs: 500 },
      },
    });
  });
  after(() => daemon?.kill());

  it("describe vm shows why a failover was refused", async () => {
    const refused = await hvctl("failover", "vm-007");
    assert.equal(refused.code, 1, refused.stderr);
    const out = await ok("describe", "vm", "vm-007");
    assert.match(out, /^id:\s+vm-007$/m, "the vm as `vm get` shows it");
    assert.match(out, /^Events:$/m);
    assert.match(
      out,
      /^ {2}\S+\s+Warning\s+FailoverRefused\s+failover\s+failover not allowed: node-03 is ready; migrate the vm instead \(FAILOVER_NOT_ALLOWED\)$/m,
    );
  });

  it("hvctl events --watch prints node-03 going NotReady as it happens, and ends cleanly on Ctrl-C", async () => {
    const node = JSON.parse(await ok("node", "get", "node-03", "-o", "json")) as {
      summary: { readiness: string };
    };
    assert.equal(
      node.summary.readiness,
      "NODE_READINESS_READY",
      "the watch must start before the fault",
    );
    const proc = spawn(
      process.execPath,
      [
        HVCTL_BIN,
        "--config",
        join(dir, "hvctl.yaml"),
        "events",
        "--watch",
        "--for",
        "node/node-03",
        "--limit",
        "1",
      ],
      {
        env: {
          ...process.env,
          ...env,
          DEBVISOR_CONFIG: "",
          DEBVISOR_CONTEXT: "",
          DEBVISOR_TOKEN: "",
        },
      },
    );
    let out = "";
    let err = "";
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    proc.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
    try {
      // The backlog first (node-03 ready), then, streamed, the fault's effect.
      await eventually(() => /Ready\s+node\/node-03/.test(out), { timeoutMs: 10_000 });
      assert.doesNotMatch(out, /NotReady/);
      await eventually(
        () => /Warning\s+NotReady\s+node\/node-03\s+readiness\s+node-03 is not ready/.test(out),
        {
          timeoutMs: 30_000,
        },
      );
      await eventually(() => /Warning\s+Fenced\s+node\/node-03/.test(out), { timeoutMs: 15_000 });
    } finally {
      proc.kill("SIGINT");
    }
    assert.equal(await exited, 0, err);
    assert.doesNotMatch(err, /Error|at /, "no stack trace");
    assert.equal(out.split("\n").filter((l) => /NotReady/.test(l)).length, 1, "told once");
  });

  it("a migration's phases appear as events, in order, and the vm's move", async () => {
    const run = await hvctl("migration", "run", "--vm", "vm-001", "--target", "node-02");
    assert.equal(run.code, 0, run.stderr);
    const id = /^migration (m-\S+):/m.exec(run.stderr)?.[1];
    assert.ok(id, run.stderr);
    const types = (await events("--for", `migration/${id}`)).map((e) =>
      e.type === "MigrationPhase" ? `${e.type}:${e.message}` : e.type,
    );
    assert.deepEqual(types, [
      "MigrationStarted",
      "MigrationPhase:phase transferring",
      "MigrationPhase:phase switchover",
      "MigrationPhase:phase completed",
      "MigrationSucceeded",
    ]);
    const described = await ok("describe", "migration", id);
    assert.match(described, /^state:\s+Succeeded$/m, "the migration as `migration get` shows it");
    assert.match(
      described,
      /^ {2}\S+\s+Normal\s+MigrationSucceeded\s+migration-engine\s+migrated live$/m,
    );
    const vm = await events("--for", "vm/vm-001");
    assert.ok(
      vm.some(
        (e) => e.type === "Moved" && e.message.includes(`node-01 -> node-02 by migration ${id}`),
      ),
    );
  });

  it("a tenant sees only its own events: its vms', never nodes' or other tenants'", async () => {
    const key = JSON.parse(
      await ok(
        "apikey",
        "create",
        "--roles",
        "viewer",
        "--principal",
        "acme-ev",
        "--tenant",
        "acme",
        "-o",
        "json",
      ),
    ) as { token: string };
    const asAcme = (...args: string[]) =>
      runHvctlInProcess(["--config", join(dir, "hvctl.yaml"), ...args], {
        ...env,
        DEBVISOR_TOKEN: key.token,
      });
    const all = await events("--limit", "1000");
    assert.ok(
      all.some((e) => e.tenant !== "acme"),
      "the cluster has other events",
    );
    const mine = JSON.parse((await asAcme("events", "-o", "json", "--limit", "1000")).stdout) as {
      events: EventJson[];
    };
    assert.ok(mine.events.length > 0);
    assert.deepEqual([...new Set(mine.events.map((e) => e.tenant))], ["acme"]);
    assert.ok(mine.events.some((e) => e.objectId === "vm-001" && e.type === "Moved"));
    // Another tenant's VM: no events, and describe answers as for a missing one.
    const other = JSON.parse(
      (await asAcme("events", "--for", "vm/vm-007", "-o", "json")).stdout,
    ) as { events: EventJson[] };
    assert.deepEqual(other.events, []);
    assert.equal((await asAcme("describe", "vm", "vm-007")).code, 5);
    // Nodes it may list, but their events are the cluster's.
    const node = await asAcme("describe", "node", "node-03");
    assert.equal(node.code, 0, node.stderr);
    assert.match(node.stdout, /^Events: <none>$/m);
  });

  it("describe replication shows a job and its runs; describe of a missing object exits 5", async () => {
    // The dev cluster's scheduler runs every job within seconds of the start.
    const out = await eventually(
      async () => {
        const text = await ok("describe", "replication", "vm-005-disk0-to-node-03");
        return /ReplicationSucceeded\s+replication\s+sent [\d.]+ GiB \(full\)/.test(text) && text;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.match(out, /vm-005-disk0-to-node-03/);
    assert.equal((await hvctl("describe", "migration", "m-nope")).code, 5);
    assert.equal((await hvctl("describe", "pod", "x")).code, 2);
  });

  it("a tenant describes its own replication job by the name it gave it", async () => {
    const key = JSON.parse(
      await ok(
        "apikey",
        "create",
        "--roles",
        "operator",
        "--principal",
        "acme-op",
        "--tenant",
        "acme",
        "-o",
        "json",
      ),
    ) as { token: string };
    const asAcme = (...args: string[]) =>
      runHvctlInProcess(["--config", join(dir, "hvctl.yaml"), ...args], {
        ...env,
        DEBVISOR_TOKEN: key.token,
      });
    const plan = await asAcme(
      "replication",
      "plan",
      "--dataset",
      "zfs:tank/vm-005-disk0",
      "--source",
      "node-02",
      "--target",
      "node-01",
      "--id",
      "acme-off",
    );
    assert.equal(plan.code, 0, plan.stderr);
    const run = await asAcme("replication", "run", "acme-off");
    assert.equal(run.code, 0, run.stderr);
    const out = await asAcme("describe", "replication", "acme-off");
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /ReplicationSucceeded\s+replication\s+sent [\d.]+ GiB \(full\)/);
    const mine = JSON.parse(
      (await asAcme("events", "--for", "replication/acme-off", "-o", "json")).stdout,
    ) as {
      events: EventJson[];
    };
    assert.ok(mine.events.length > 0);
    assert.ok(mine.events.every((e) => e.objectId === "acme-off" && e.tenant === "acme"));
  });

  it("a tenant's watch streams its own events and never a node's", async () => {
    const key = JSON.parse(
      await ok(
        "apikey",
        "create",
        "--roles",
        "viewer",
        "--principal",
        "acme-watch",
        "--tenant",
        "acme",
        "-o",
        "json",
      ),
    ) as { token: string };
    const signals = new EventEmitter();
    let out = "";
    let err = "";
    const watching = runCli(
      ["--config", join(dir, "hvctl.yaml"), "events", "--watch", "-o", "json", "--limit", "1"],
      {
        out: (t) => {
          out += t;
        },
        err: (t) => {
          err += t;
        },
        env: { ...env, DEBVISOR_TOKEN: key.token },
        signals,
      },
    );
    try {
      await eventually(() => out.split("\n").length > 1, { timeoutMs: 10_000 });
      await ok("node", "cordon", "node-02", "--reason", "tenant watch");
      await ok("node", "uncordon", "node-02");
      await ok("migration", "run", "--vm", "vm-001", "--target", "node-01");
      await eventually(() => /"MigrationSucceeded"/.test(out), { timeoutMs: 15_000 });
    } finally {
      signals.emit("SIGINT");
    }
    assert.equal(await watching, 0, err);
    const seen = out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as EventJson);
    assert.ok(seen.some((e) => e.type === "Moved" && e.objectId === "vm-001"));
    assert.deepEqual([...new Set(seen.map((e) => e.tenant))], ["acme"]);
    assert.ok(!seen.some((e) => e.objectKind === "EVENT_OBJECT_KIND_NODE"), "no node events");
  });

  it("hvctl events --watch | head: exits 0 without a stack trace once the reader has gone", async () => {
    const proc = spawn(
      process.execPath,
      [HVCTL_BIN, "--config", join(dir, "hvctl.yaml"), "events", "--watch", "--limit", "1"],
      {
        env: {
          ...process.env,
          ...env,
          DEBVISOR_CONFIG: "",
          DEBVISOR_CONTEXT: "",
          DEBVISOR_TOKEN: "",
        },
      },
    );
    let err = "";
    proc.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
    // Like head -1: read the first line, then close the pipe.
    await new Promise((r) => proc.stdout.once("data", r));
    proc.stdout.destroy();
    // The next event is written into the closed pipe.
    await ok("node", "cordon", "node-01", "--reason", "epipe");
    await ok("node", "uncordon", "node-01");
    const code = await Promise.race([
      exited,
      new Promise((r) => setTimeout(r, 15_000, "still running")),
    ]);
    if (code === "still running") proc.kill("SIGKILL");
    assert.equal(code, 0, err);
    assert.equal(err, "");
  });
});
