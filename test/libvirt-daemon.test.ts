import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createServiceClient, openChannel, resolveContext } from "../src/client/index.js";
import { MigrationService } from "../src/gen/debvisor/v1/migration_pb.js";
import { NodeReadiness, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { VmService, VmState } from "../src/gen/debvisor/v1/vm_pb.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { missingTool } from "./helpers/required-tools.js";

const NODE_XML = fileURLToPath(new URL("../../test/fixtures/virsh/node.xml", import.meta.url));
const hasVirsh = spawnSync("virsh", ["--version"], { encoding: "utf8" }).status === 0;

describe("a node the daemon drives over libvirt (real virsh, libvirt's test driver)", {
  skip: missingTool("virsh", hasVirsh, "apt-get install libvirt-clients"),
}, () => {
  let dir: string;
  let daemon: DaemonProcess;
  before(async () => {
    dir = mkdtempSync(join(/^[A-Za-z0-9._/-]+$/.test(tmpdir()) ? tmpdir() : "/tmp", "dv-libvirt-"));
    copyFileSync(NODE_XML, join(dir, "node.xml"));
    daemon = await startDevDaemon(dir, {
      simulation: { enabled: false },
      libvirt: {
        nodes: [{ id: "hv01", uri: `test://${dir}/node.xml`, cpuCores: 8, memoryBytes: 2 ** 34 }],
        reportIntervalMs: 1000,
      },
    });
  });
  after(() => daemon?.kill());

  it("registers the node from the configuration and lists its domains as vms", async () => {
    const ch = openChannel(resolveContext(join(dir, "hvctl.yaml")));
    try {
      const node = await createServiceClient(NodeService, ch).getNode({ id: { id: "hv01" } });
      assert.equal(node.summary?.readiness, NodeReadiness.READY);
      assert.equal(node.summary?.info?.labels["debvisor.io/driver"], "libvirt");
      const { vms } = await createServiceClient(VmService, ch).listVms({});
      const byId = new Map(vms.map((v) => [v.id, v]));
      assert.equal(byId.get("web-01")?.state, VmState.RUNNING);
      assert.equal(byId.get("db-01")?.state, VmState.STOPPED);
      assert.equal(byId.get("web-01")?.nodeId?.id, "hv01");
      // libvirt's test driver cannot migrate, and there is no second node: planning says so.
      const plan = await createServiceClient(MigrationService, ch).prepareMigration({
        vm: { vmId: "web-01" },
      });
      assert.equal(plan.allowed, false);
      assert.match(plan.checks.at(-1)?.reason ?? "", /no other node/);
    } finally {
      ch.close();
    }
  });
});
