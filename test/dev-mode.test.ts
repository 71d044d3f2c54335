import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import {
  DAEMON_BIN,
  type DaemonProcess,
  devDaemonArgs,
  runProcess,
  startDaemonProcess,
  startDevDaemon,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

describe("dev mode across restarts", () => {
  let dir: string;
  let daemon: DaemonProcess | undefined;
  const config = () => join(dir, "hvctl.yaml");
  const hvctl = (...args: string[]) => hvctlInProcess(config(), ...args);
  const ok = async (...args: string[]) => {
    const r = await hvctl(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r;
  };
  const restart = async () => {
    daemon?.proc.kill("SIGTERM");
    await daemon?.exited;
    daemon = await startDevDaemon(dir);
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-devmode-"));
    daemon = await startDevDaemon(dir);
  });
  after(() => daemon?.kill());

  it("keeps contexts a user added to hvctl.yaml, and the current one", async () => {
    await ok(
      "config",
      "set-context",
      "lab",
      "--server",
      "127.0.0.1:1",
      "--tls-server-name",
      "localhost",
      "--ca",
      join(dir, "pki", "ca.crt"),
      "--api-key-file",
      join(dir, "pki", "operator.apikey"),
    );
    await ok("config", "use-context", "dev-operator");
    await restart();
    const file = parseYaml(readFileSync(config(), "utf8")) as {
      currentContext: string;
      contexts: { name: string; server: string }[];
    };
    assert.deepEqual(file.contexts.map((c) => c.name).sort(), ["dev", "dev-operator", "lab"]);
    assert.equal(file.currentContext, "dev-operator");
    const dev = file.contexts.find((c) => c.name === "dev");
    assert.equal(dev?.server, daemon?.grpcAddress, "dev points at the new port");
    assert.equal((await ok("auth", "whoami", "-o", "json")).code, 0);
  });

  it("keeps snapshots of the simulated storage, as it keeps the simulated hypervisors", async () => {
    const { vms } = JSON.parse((await ok("vm", "list", "-o", "json")).stdout) as {
      vms: { disks: { backend: string; pool: string; name: string }[] }[];
    };
    const disk = vms.flatMap((v) => v.disks).find((d) => d.backend === "BACKEND_ZFS");
    assert.ok(disk, "the dev cluster has a ZFS disk");
    const dataset = `zfs:${disk.pool}/${disk.name}`;
    const made = JSON.parse(
      (await ok("snapshot", "create", dataset, "--label", "keepme", "-o", "json")).stdout,
    ) as { snapshot: { snapshotName: string } };
    await restart();
    const after = JSON.parse((await ok("snapshot", "list", dataset, "-o", "json")).stdout) as {
      snapshots: { ref: { snapshotName: string } }[];
    };
    assert.ok(
      after.snapshots.some((s) => s.ref.snapshotName === made.snapshot.snapshotName),
      "the snapshot survived the restart",
    );
  });
});

describe("a port conflict at start-up", () => {
  let blocker: Server;
  let taken: string;
  before(async () => {
    blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const address = blocker.address();
    taken = `127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}`;
  });
  after(() => blocker.close());

  for (const [flag, other] of [
    ["--listen", "--metrics-listen"],
    ["--metrics-listen", "--listen"],
  ] as const) {
    it(`names ${flag} and exits non-zero`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "dv-port-"));
      const r = await runProcess(
        process.execPath,
        [DAEMON_BIN, "--dev", "--data-dir", dir, flag, taken, other, "127.0.0.1:0"],
        { timeoutMs: 60_000 },
      );
      assert.notEqual(r.code, 0);
      assert.match(
        r.stderr,
        new RegExp(
          `cannot listen on ${taken} \\(${flag}, config [a-z.]+\\): address already in use`,
        ),
      );
    });
  }
});

describe("start-up lines", () => {
  it("read like sentences with --log-format pretty, and stay JSON when stdout is not a terminal", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-pretty-"));
    const args = [DAEMON_BIN, ...devDaemonArgs(dir)];
    const proc = spawn(process.execPath, [...args, "--log-format", "pretty"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      proc.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      await eventually(() => assert.match(out, /serving/), { timeoutMs: 60_000, intervalMs: 100 });
      assert.match(out, /^\d\d:\d\d:\d\d INFO {2}serving address=127\.0\.0\.1:\d+ httpAddress=/m);
      assert.doesNotMatch(out, /^\{/m, "no JSON lines");
    } finally {
      proc.kill("SIGKILL");
    }
    // The default (auto) on a pipe: JSON, which the other tests read.
    const json = await startDaemonProcess([...args.slice(1)]);
    json.kill();
    assert.ok(json.logs.some((l) => l.msg === "serving"));
  });
});
