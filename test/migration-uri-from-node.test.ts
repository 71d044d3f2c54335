// A node reports how other nodes reach it for a migration (the label
// debvisor.io/migration-uri), and the source's libvirt acts on that URI:
// `qemu+ext:///system?command=...` would have the source node run the
// program (virsh does: the ext transport runs its command locally). A stolen
// node certificate registering such a URI gets no migration planned or
// started to it; a plain qemu+tls URI is planned as before.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { agentFiles, type ResolvedContext, resolveContext } from "../src/client/index.js";
import { enrollAgent } from "./helpers/agent-process.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { devClients } from "./helpers/dev-clients.js";
import { hvctlInProcess } from "./helpers/hvctl-in-process.js";

const GIB = 1024n ** 3n;
const nowS = () => BigInt(Math.floor(Date.now() / 1000));
const LABEL = "debvisor.io/migration-uri";

describe("a node's reported migration URI", () => {
  let dir: string;
  let daemon: DaemonProcess;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const hvctl = (...args: string[]) => hvctlInProcess(join(dir, "hvctl.yaml"), ...args);

  /** Enrolls `id` and registers it, ready and roomy, with `uri` as its migration URI. */
  const registerWith = async (id: string, uri: string) => {
    const f = agentFiles(await enrollAgent(hvctl, daemon.grpcAddress, dir, id));
    const node = devClients(
      { ...admin, certPem: readFileSync(f.cert, "utf8"), keyPem: readFileSync(f.key, "utf8") },
      channels,
    ).nodes;
    await node.registerNode({
      id: { id },
      hostname: `${id}.example`,
      capacity: { cpuCores: 64, memoryBytes: 256n * GIB },
      labels: { [LABEL]: uri },
    });
    await node.heartbeat({ nodeId: { id }, timestamp: { seconds: nowS() } });
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-miguri-"));
    daemon = await startDevDaemon(dir, {
      simulation: { nodes: 2, vmsPerNode: 1 },
      cluster: { failover: { enabled: false } },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("plans and starts no migration to a node whose URI would run a program on the source", async () => {
    await registerWith("node-08", "qemu+ext:///system?command=/tmp/x");
    await registerWith("node-09", "qemu+tls://node-09.example/system");
    const { migrations, vms } = devClients(admin, channels);
    const vmId = (await vms.listVms({})).vms[0]?.id ?? "";
    assert.notEqual(vmId, "");

    const hostile = await migrations.prepareMigration({
      vm: { vmId },
      target: { nodeId: { id: "node-08" } },
      allowDowntime: true,
    });
    assert.equal(hostile.allowed, false);
    const check = hostile.checks.find((c) => c.name === "target_migration_uri");
    assert.equal(check?.passed, false, JSON.stringify(hostile.checks));
    assert.match(
      check?.reason ?? "",
      /node-08 reported a migration URI no source may connect to: the ext transport/,
    );
    await assert.rejects(
      migrations.startMigration({
        vm: { vmId },
        target: { nodeId: { id: "node-08" } },
        allowDowntime: true,
      }),
      /FAILED_PRECONDITION|target_migration_uri|migration URI/,
    );

    const plain = await migrations.prepareMigration({
      vm: { vmId },
      target: { nodeId: { id: "node-09" } },
      allowDowntime: true,
    });
    assert.equal(
      plain.checks.some((c) => c.name === "target_migration_uri"),
      false,
      "a qemu+tls URI passes",
    );
  });
});
