// RBD fencing on the libvirt start path, with real processes: libvirt's test
// hypervisor (one virsh session, as in libvirt-virsh.test.ts) starts the
// domains, and fake `rbd` and `ceph` programs (test/fixtures/storage/
// fake-ceph-cli.mjs) keep the images' locks and the blocklist in a JSON file
// and log every call. A START_VM dispatched to the operation executor carries
// the placement generation as the fencing token.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { agentConfigSchema, openNodeHypervisor } from "../src/agent/index.js";
import { silentLogger } from "../src/core/index.js";
import {
  type CommandRunner,
  createLibvirtDriver,
  createMemoryJournal,
  createOperationExecutor,
  createRbdFencing,
  createVirshSession,
  type HypervisorDriver,
} from "../src/drivers/index.js";
import {
  OperationDispatchSchema,
  OperationKind,
  OperationOutcome,
  type OperationResult,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { eventually } from "./helpers/eventually.js";
import { findOnPath, missingTool } from "./helpers/required-tools.js";

const FAKE = fileURLToPath(
  new URL("../../test/fixtures/storage/fake-ceph-cli.mjs", import.meta.url),
);
const hasVirsh = spawnSync("virsh", ["--version"], { encoding: "utf8" }).status === 0;
const OLD_QEMU = "192.0.2.4:0/2207394458";

/** vm-7 has one RBD disk, vm-8 a local file; both shut off. */
const NODE_XML = `<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vm-7</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices><disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='rbd' name='rbd/vm-7-disk0'/><target dev='vda' bus='virtio'/></disk></devices>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vm-8</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/var/lib/libvirt/images/vm-8.img'/><target dev='vda' bus='virtio'/></disk></devices>
    <test:runstate>5</test:runstate>
  </domain>
</node>`;

/**
 * A node hv01 whose rbd image `rbd/vm-7-disk0` is locked by `lockId`, its old
 * qemu still watching. `session`: the driver over one virsh session, given the
 * fake programs' paths; `agent`: the agent's own driver (openNodeHypervisor),
 * a virsh process per call, finding `rbd` and `ceph` on PATH.
 */
async function withNode(
  lockId: string,
  how: "session" | "agent",
  body: (n: {
    start: (vmId: string, generation: bigint) => Promise<OperationResult>;
    calls: () => string[];
    state: () => { images: Record<string, { locks: { id: string }[] }>; blocklist: string[] };
    domstate: (vmId: string) => Promise<string | undefined>;
  }) => Promise<void>,
) {
  const base = /^[A-Za-z0-9._/-]+$/.test(tmpdir()) ? tmpdir() : "/tmp";
  const dir = mkdtempSync(join(base, "dv-rbd-fence-"));
  const stateFile = join(dir, "ceph.json");
  const log = `${stateFile}.log`;
  writeFileSync(join(dir, "node.xml"), NODE_XML);
  writeFileSync(
    stateFile,
    JSON.stringify({
      images: {
        "rbd/vm-7-disk0": {
          locks: [{ id: lockId, locker: "client.4123", address: "192.0.2.4:0/3012034728" }],
          watchers: [OLD_QEMU],
        },
      },
      blocklist: [],
    }),
  );
  writeFileSync(log, "");
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const program = (name: string, text: string) => {
    writeFileSync(join(bin, name), `#!/bin/sh\n${text}\n`);
    chmodSync(join(bin, name), 0o755);
    return join(bin, name);
  };
  for (const name of ["rbd", "ceph"])
    program(name, `exec "${process.execPath}" "${FAKE}" ${name} "${stateFile}" "$@"`);
  const uri = `test://${dir}/node.xml`;
  const session = createVirshSession({ uri });
  const path = process.env.PATH;
  let driver: HypervisorDriver;
  if (how === "session") {
    // virsh's calls go into the same log, so the order across the programs shows.
    const run: CommandRunner = (file, args, options) => {
      const shown = args.filter((a) => a !== "-c" && a !== uri);
      appendFileSync(log, `${JSON.stringify(["virsh", ...shown])}\n`);
      return session.run(file, args, options);
    };
    const rbdFencing = createRbdFencing({
      rbd: join(bin, "rbd"),
      ceph: join(bin, "ceph"),
      timeoutMs: 5000,
    });
    driver = createLibvirtDriver({ nodeId: "hv01", uri, runner: run, rbdFencing });
  } else {
    const virsh = program(
      "virsh-logged",
      `shift 2; printf '["virsh"' >>"${log}"; for a in "$@"; do printf ',"%s"' "$a" >>"${log}"; done; echo ']' >>"${log}"; exec "${findOnPath("virsh")}" -c "${uri}" "$@"`,
    );
    process.env.PATH = `${bin}${delimiter}${path ?? ""}`;
    const config = agentConfigSchema.parse({ dir, driver: { kind: "libvirt", uri, virsh } });
    driver = openNodeHypervisor(config, "hv01", silentLogger).driver;
  }
  const results = new Map<string, OperationResult>();
  const executor = createOperationExecutor({
    driver,
    journal: createMemoryJournal(),
    logger: silentLogger,
    signal: new AbortController().signal,
    send: (m) => {
      if (m.kind?.case === "result") {
        const r = m.kind.value as OperationResult;
        results.set(r.operationId, r);
      }
    },
  });
  let ops = 0;
  try {
    await body({
      start: (vmId, generation) => {
        const operationId = `op-${++ops}`;
        executor.dispatch(
          create(OperationDispatchSchema, {
            operationId,
            kind: OperationKind.START_VM,
            vmId,
            generation,
          }),
        );
        return eventually(() => results.get(operationId) ?? false);
      },
      calls: () =>
        readFileSync(log, "utf8")
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => (JSON.parse(l) as string[]).join(" ")),
      state: () => JSON.parse(readFileSync(stateFile, "utf8")),
      domstate: async (vmId) => (await driver.info(vmId, new AbortController().signal))?.state,
    });
  } finally {
    process.env.PATH = path;
    await session.close();
    rmSync(dir, { recursive: true });
  }
}

/** A start under generation 4 taking vm-7's disk over from generation 3, in order. */
const TAKE_OVER_G4 = [
  `ceph osd blocklist add ${OLD_QEMU}`,
  "rbd lock remove rbd/vm-7-disk0 debvisor-g3-hv02 client.4123",
  "rbd lock add rbd/vm-7-disk0 debvisor-g4-hv01",
  "virsh start --domain vm-7",
];

/** The calls that change something, in order (reads and virsh's lookups left out). */
const changes = (calls: string[]) =>
  calls.filter((c) =>
    /^(ceph osd blocklist add|rbd lock (add|remove)|virsh (start|resume))/.test(c),
  );

if (!missingTool("virsh", hasVirsh, "apt-get install libvirt-clients")) {
  describe("libvirt start with RBD disks: the image lock carries the generation", () => {
    it("takes over from an older generation: blocklists the old client, moves the lock, then starts", async () => {
      await withNode("debvisor-g3-hv02", "session", async (n) => {
        const r = await n.start("vm-7", 4n);
        assert.equal(r.outcome, OperationOutcome.SUCCEEDED, r.message);
        assert.deepEqual(changes(n.calls()), TAKE_OVER_G4);
        assert.deepEqual(n.state().blocklist, [OLD_QEMU]);
        assert.deepEqual(
          n.state().images["rbd/vm-7-disk0"]?.locks.map((l) => l.id),
          ["debvisor-g4-hv01"],
        );
        assert.equal(await n.domstate("vm-7"), "running");
      });
    });

    it("refuses a start older than the lock's generation: STALE_GENERATION, nothing blocklisted, not started", async () => {
      await withNode("debvisor-g5-hv02", "session", async (n) => {
        const r = await n.start("vm-7", 4n);
        assert.equal(r.outcome, OperationOutcome.FAILED);
        assert.equal(r.reason, "STALE_GENERATION");
        assert.deepEqual(changes(n.calls()), []);
        assert.deepEqual(n.state().blocklist, []);
        assert.deepEqual(
          n.state().images["rbd/vm-7-disk0"]?.locks.map((l) => l.id),
          ["debvisor-g5-hv02"],
        );
        assert.equal(await n.domstate("vm-7"), "stopped");
      });
    });

    it("runs no rbd or ceph command for a domain whose disks are not RBD", async () => {
      await withNode("debvisor-g3-hv02", "session", async (n) => {
        const r = await n.start("vm-8", 4n);
        assert.equal(r.outcome, OperationOutcome.SUCCEEDED, r.message);
        assert.deepEqual(
          n.calls().filter((c) => !c.startsWith("virsh ")),
          [],
        );
        assert.ok(n.calls().includes("virsh start --domain vm-8"), n.calls().join("\n"));
        assert.equal(await n.domstate("vm-8"), "running");
      });
    });

    it("the agent's libvirt node does the same with the rbd and ceph found on its PATH", async () => {
      await withNode("debvisor-g3-hv02", "agent", async (n) => {
        const r = await n.start("vm-7", 4n);
        assert.equal(r.outcome, OperationOutcome.SUCCEEDED, r.message);
        assert.deepEqual(changes(n.calls()), TAKE_OVER_G4);
      });
    });
  });
}
