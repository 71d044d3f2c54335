/**
 * The one conformance suite every HypervisorDriver must pass unchanged: the
 * behaviour the cluster layer relies on, whatever the backend.
 *
 * Contract of `makeDriver` (called once per test, so tests never share state):
 * it resolves to a {@link ConformanceFixture} whose driver drives a node that
 * holds, when the fixture is made,
 * - `runningVmId`: a persistent VM that is running,
 * - `stoppedVmId`: a persistent VM that is stopped,
 * and no VM named `ghost-01`. `destination` is another node the driver may
 * migrate to. When the driver's capabilities say it can migrate live,
 * `destinationVmIds` must list the VMs on that destination (to see a VM
 * arrive); a driver that cannot must refuse live migration with
 * MIGRATION_NOT_ALLOWED. `backendCalls`, when given, counts the commands or
 * requests sent to the backend (to prove refused input sent none). `close`
 * releases what the fixture holds.
 *
 * What the suite pins down, beyond the interface's doc comments:
 * - refused input (a bad id) is INVALID_ARGUMENT and reaches no backend;
 * - an unknown VM is VM_NOT_FOUND for start, stop and migrate, undefined for info;
 * - a call whose signal is already aborted rejects with CANCELLED and changes nothing;
 *   a call aborted while it runs rejects with CANCELLED and the driver keeps working;
 * - offline migration of a running VM is MIGRATION_NOT_ALLOWED and the VM stays
 *   (the VM must be stopped first; libvirt would otherwise leave it running here
 *   and defined there), live migration of a stopped VM likewise;
 * - a driver that can define (canDefine): a defined spec is listed stopped with
 *   its vCPUs and memory, a second define of the id is VM_EXISTS; undefining a
 *   running VM is VM_RUNNING unless forced, an unknown one VM_NOT_FOUND;
 * - a live migration whose VM is powered off midway, or after its last
 *   transfer report, fails: the VM stays here, stopped, and never arrives (a stopped VM handed over would be a live
 *   migration that succeeded with the VM down).
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { RpcError } from "../../src/core/index.js";
import {
  canDefine,
  type DomainSpec,
  type HypervisorDriver,
  type MigrationDestination,
  type MigrationProgress,
} from "../../src/drivers/index.js";

/** What `makeDriver` gives the suite; see the file's header for the contract. */
export interface ConformanceFixture {
  readonly driver: HypervisorDriver;
  readonly runningVmId: string;
  readonly stoppedVmId: string;
  readonly destination: MigrationDestination;
  readonly destinationVmIds?: () => Promise<string[]>;
  readonly backendCalls?: () => number;
  readonly close?: () => Promise<void>;
}

const GHOST = "ghost-01";
/** Ids no driver may pass to a backend: options, blanks, separators, traversal, length. */
const BAD_IDS = ["", "-rf", "--all", "a b", "x;reboot", "$(id)", "../etc", "UPPER", "a".repeat(64)];

const live = () => new AbortController().signal;
const isReason = (reason: string) => (e: unknown) => e instanceof RpcError && e.reason === reason;

/** Runs the suite against the driver `makeDriver` builds. */
export function runHypervisorConformance(
  name: string,
  makeDriver: () => Promise<ConformanceFixture>,
): void {
  describe(`HypervisorDriver conformance: ${name}`, () => {
    let f: ConformanceFixture;
    let d: HypervisorDriver;
    beforeEach(async () => {
      f = await makeDriver();
      d = f.driver;
    });
    afterEach(async () => {
      await f?.close?.();
    });

    const stateOf = async (id: string) => (await d.info(id, live()))?.state;

    const SPEC: DomainSpec = {
      id: "new-01",
      name: "new one",
      vcpus: 2,
      memoryBytes: 512n * 1024n * 1024n,
      disks: [{ backend: "rbd", pool: "rbd", name: "new-01-disk0", sizeBytes: 0n }],
      ha: true,
      cpuModel: "",
    };

    it("defines a spec stopped with its shape; defining the id again is VM_EXISTS", async (t) => {
      if (!canDefine(d)) return t.skip("this driver cannot define");
      await d.define(SPEC, live());
      const info = await d.info(SPEC.id, live());
      assert.equal(info?.state, "stopped");
      assert.equal(info?.vcpus, 2);
      assert.equal(info?.memoryBytes, SPEC.memoryBytes);
      assert.ok((await d.list(live())).some((v) => v.id === SPEC.id));
      await assert.rejects(d.define(SPEC, live()), isReason("VM_EXISTS"));
      await assert.rejects(d.define({ ...SPEC, id: f.runningVmId }, live()), isReason("VM_EXISTS"));
      await d.start(SPEC.id, live());
      assert.equal(await stateOf(SPEC.id), "running");
    });

    it("undefines a stopped VM; a running one only with force; an unknown one is VM_NOT_FOUND", async (t) => {
      if (!canDefine(d)) return t.skip("this driver cannot define");
      await assert.rejects(
        d.undefine(f.runningVmId, { force: false, signal: live() }),
        isReason("VM_RUNNING"),
      );
      assert.equal(await stateOf(f.runningVmId), "running");
      await d.undefine(f.stoppedVmId, { force: false, signal: live() });
      assert.equal(await d.info(f.stoppedVmId, live()), undefined);
      await d.undefine(f.runningVmId, { force: true, signal: live() });
      assert.equal(await d.info(f.runningVmId, live()), undefined);
      await assert.rejects(
        d.undefine(GHOST, { force: true, signal: live() }),
        isReason("VM_NOT_FOUND"),
      );
    });

    it("lists every VM once, sorted by id, each as info describes it", async () => {
      const list = await d.list(live());
      const ids = list.map((v) => v.id);
      assert.deepEqual(ids, [...ids].sort());
      assert.equal(new Set(ids).size, ids.length);
      assert.ok(ids.includes(f.runningVmId) && ids.includes(f.stoppedVmId));
      assert.ok(!ids.includes(GHOST));
      for (const vm of list) {
        assert.ok(vm.vcpus >= 1, `${vm.id} vcpus`);
        assert.ok(vm.memoryBytes > 0n, `${vm.id} memory`);
        assert.deepEqual(await d.info(vm.id, live()), vm);
      }
    });

    it("describes an existing VM and answers undefined for a missing one", async () => {
      const running = await d.info(f.runningVmId, live());
      assert.equal(running?.id, f.runningVmId);
      assert.equal(running?.state, "running");
      assert.equal(running?.persistent, true);
      assert.equal(await stateOf(f.stoppedVmId), "stopped");
      assert.equal(await d.info(GHOST, live()), undefined);
    });

    it("starts a stopped VM, and starting it again is a no-op", async () => {
      await d.start(f.stoppedVmId, live());
      assert.equal(await stateOf(f.stoppedVmId), "running");
      await d.start(f.stoppedVmId, live());
      assert.equal(await stateOf(f.stoppedVmId), "running");
      assert.equal((await d.list(live())).find((v) => v.id === f.stoppedVmId)?.state, "running");
    });

    it("stops a running VM gracefully, and stopping it again is a no-op", async () => {
      await d.stop(f.runningVmId, { force: false, signal: live() });
      assert.equal(await stateOf(f.runningVmId), "stopped");
      await d.stop(f.runningVmId, { force: false, signal: live() });
      await d.stop(f.runningVmId, { force: true, signal: live() });
      assert.equal(await stateOf(f.runningVmId), "stopped");
    });

    it("powers a running VM off with force, and it starts again afterwards", async () => {
      await d.stop(f.runningVmId, { force: true, signal: live() });
      assert.equal(await stateOf(f.runningVmId), "stopped");
      await d.start(f.runningVmId, live());
      assert.equal(await stateOf(f.runningVmId), "running");
    });

    it("answers VM_NOT_FOUND for start, stop and migrate of an unknown VM", async () => {
      await assert.rejects(d.start(GHOST, live()), isReason("VM_NOT_FOUND"));
      await assert.rejects(
        d.stop(GHOST, { force: false, signal: live() }),
        isReason("VM_NOT_FOUND"),
      );
      await assert.rejects(
        d.stop(GHOST, { force: true, signal: live() }),
        isReason("VM_NOT_FOUND"),
      );
      await assert.rejects(
        d.migrate(GHOST, f.destination, { live: false, signal: live() }),
        isReason("VM_NOT_FOUND"),
      );
    });

    it("refuses a bad VM id with INVALID_ARGUMENT before reaching the backend", async () => {
      const before = f.backendCalls?.();
      for (const bad of BAD_IDS) {
        await assert.rejects(d.info(bad, live()), isReason("INVALID_ARGUMENT"), bad);
        await assert.rejects(d.start(bad, live()), isReason("INVALID_ARGUMENT"), bad);
        await assert.rejects(
          d.stop(bad, { force: true, signal: live() }),
          isReason("INVALID_ARGUMENT"),
          bad,
        );
        await assert.rejects(
          d.migrate(bad, f.destination, { live: true, signal: live() }),
          isReason("INVALID_ARGUMENT"),
          bad,
        );
      }
      assert.equal(f.backendCalls?.(), before);
    });

    it("rejects every call with CANCELLED when its signal is already aborted, changing nothing", async () => {
      const before = await d.list(live());
      const calls = f.backendCalls?.();
      const aborted = AbortSignal.abort();
      await assert.rejects(d.list(aborted), isReason("CANCELLED"));
      await assert.rejects(d.info(f.runningVmId, aborted), isReason("CANCELLED"));
      await assert.rejects(d.start(f.stoppedVmId, aborted), isReason("CANCELLED"));
      await assert.rejects(
        d.stop(f.runningVmId, { force: true, signal: aborted }),
        isReason("CANCELLED"),
      );
      await assert.rejects(
        d.migrate(f.runningVmId, f.destination, { live: true, signal: aborted }),
        isReason("CANCELLED"),
      );
      assert.equal(f.backendCalls?.(), calls);
      assert.deepEqual(await d.list(live()), before);
    });

    it("rejects a call aborted while it runs with CANCELLED, and keeps working", async () => {
      const ac = new AbortController();
      const listing = d.list(ac.signal);
      ac.abort();
      await assert.rejects(listing, isReason("CANCELLED"));
      assert.equal(await stateOf(f.runningVmId), "running");
    });

    it("refuses offline migration of a running VM and live migration of a stopped one; both stay", async () => {
      await assert.rejects(
        d.migrate(f.runningVmId, f.destination, { live: false, signal: live() }),
        isReason("MIGRATION_NOT_ALLOWED"),
      );
      await assert.rejects(
        d.migrate(f.stoppedVmId, f.destination, { live: true, signal: live() }),
        isReason("MIGRATION_NOT_ALLOWED"),
      );
      assert.equal(await stateOf(f.runningVmId), "running");
      assert.equal(await stateOf(f.stoppedVmId), "stopped");
    });

    it("migrates a running VM live with progress, or refuses when it cannot", async () => {
      const reports: MigrationProgress[] = [];
      const run = d.migrate(f.runningVmId, f.destination, {
        live: true,
        signal: live(),
        onProgress: (p) => reports.push(p),
      });
      if (!d.capabilities.liveMigration) {
        await assert.rejects(run, isReason("MIGRATION_NOT_ALLOWED"));
        assert.equal(await stateOf(f.runningVmId), "running");
        return;
      }
      await run;
      assert.equal(await d.info(f.runningVmId, live()), undefined);
      assert.ok((await f.destinationVmIds?.())?.includes(f.runningVmId), "arrived");
      const percents = reports.map((p) => p.percent);
      assert.deepEqual(
        percents,
        [...percents].sort((a, b) => a - b),
        "never goes back",
      );
      assert.deepEqual(reports.at(-1)?.phase, "completed");
      assert.equal(reports.at(-1)?.percent, 100);
    });

    it("rolls a live migration back when it is aborted midway: the VM keeps running here", async (t) => {
      if (!d.capabilities.liveMigration) {
        t.skip("the backend cannot migrate live");
        return;
      }
      const ac = new AbortController();
      const run = d.migrate(f.runningVmId, f.destination, {
        live: true,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.phase === "transferring") ac.abort();
        },
      });
      await assert.rejects(run, isReason("CANCELLED"));
      assert.equal(await stateOf(f.runningVmId), "running");
      assert.ok(!(await f.destinationVmIds?.())?.includes(f.runningVmId), "not on the destination");
    });

    for (const [when, at] of [
      ["midway", (p: MigrationProgress) => p.phase === "transferring"],
      [
        "at the last transfer report, before the switchover",
        (p: MigrationProgress) => p.phase === "transferring" && p.percent >= 99,
      ],
    ] as const)
      it(`fails a live migration whose VM is powered off ${when}: it stays here, stopped`, async (t) => {
        if (!d.capabilities.liveMigration) {
          t.skip("the backend cannot migrate live");
          return;
        }
        let stopped: Promise<void> | undefined;
        const run = d.migrate(f.runningVmId, f.destination, {
          live: true,
          signal: live(),
          onProgress: (p) => {
            if (at(p)) stopped ??= d.stop(f.runningVmId, { force: true, signal: live() });
          },
        });
        await assert.rejects(run, isReason("BACKEND_FAILED"));
        await stopped;
        assert.equal(await stateOf(f.runningVmId), "stopped");
        assert.ok(
          !(await f.destinationVmIds?.())?.includes(f.runningVmId),
          "not on the destination",
        );
      });
  });
}
