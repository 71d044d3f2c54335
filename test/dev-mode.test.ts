import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
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
