import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { type Clock, RpcError } from "../../src/core/index.js";
import {
  canClone,
  canManageImages,
  canReplicate,
  canStream,
  createSimulatedStorage,
  type SimulatedStorage,
  type StorageDriver,
  stampedSnapshotName,
} from "../../src/drivers/index.js";
import { DatasetRefSchema, StorageBackend } from "../../src/gen/debvisor/v1/storage_pb.js";

/** The instant every scenario runs at (a Sunday). */
export const NOW = Date.parse("2026-11-22T14:05:02Z");
export const ZFS_DISK = create(DatasetRefSchema, {
  backend: StorageBackend.BACKEND_ZFS,
  pool: "tank",
  name: "vm-100-disk0",
});
export const RBD_DISK = create(DatasetRefSchema, {
  backend: StorageBackend.BACKEND_RBD,
  pool: "rbd",
  name: "vm-200-disk0",
});
const DAY1 = "daily-20261120T000000Z";
const DAY2 = "daily-20261121T000000Z";
const HELD = "held-20261121T120000Z";
const MANUAL = stampedSnapshotName("manual", NOW);
const GIB = 1024 ** 3;
const at = (iso: string) => Date.parse(iso);

/**
 * The simulated storage holding the world the recorded transcripts were
 * taken in. ZFS: tank/vm-100-disk0 on node-01 with two daily snapshots and
 * one held; a diverged copy on node-03. RBD: rbd/vm-200-disk0 with two daily
 * snapshots, the second protected and cloned to rbd/acme-base.
 */
export async function simulatedWorld(clock: Clock): Promise<SimulatedStorage> {
  const sim = createSimulatedStorage({
    clock,
    sleep: async () => {},
    datasets: [
      {
        dataset: ZFS_DISK,
        nodeId: "node-01",
        sizeBytes: 8 * GIB,
        snapshots: [
          { name: DAY1, createdMs: at("2026-11-20T00:00:00Z") },
          { name: DAY2, createdMs: at("2026-11-21T00:00:00Z") },
          { name: HELD, createdMs: at("2026-11-21T12:00:00Z") },
        ],
      },
      {
        dataset: ZFS_DISK,
        nodeId: "node-03",
        sizeBytes: 8 * GIB,
        snapshots: [{ name: "old-20261101T000000Z", createdMs: at("2026-11-01T00:00:00Z") }],
      },
      {
        dataset: RBD_DISK,
        nodeId: "node-01",
        sizeBytes: 10 * GIB,
        snapshots: [
          { name: DAY1, createdMs: at("2026-11-20T00:00:00Z") },
          { name: DAY2, createdMs: at("2026-11-21T00:00:00Z") },
        ],
      },
    ],
  });
  sim.setHold({ dataset: ZFS_DISK, name: HELD, nodeId: "node-01" }, true);
  const signal = new AbortController().signal;
  await sim.protectSnapshot({ dataset: RBD_DISK, name: DAY2 }, signal);
  await sim.cloneSnapshot(
    { dataset: RBD_DISK, name: DAY2 },
    create(DatasetRefSchema, {
      backend: StorageBackend.BACKEND_RBD,
      pool: "rbd",
      name: "acme-base",
    }),
    signal,
  );
  return sim;
}

/** An implementation under test, set up afresh for each scenario. */
export interface ConformanceSubject {
  readonly name: string;
  readonly backend: "zfs" | "rbd";
  /** A driver holding the world above; recorded subjects replay the scenario's transcript. */
  setup(scenario: string): Promise<{ driver: StorageDriver; done(): void }>;
  /**
   * Also run the send scenarios split in two halves (`openSendStream` on the
   * source, `receiveStream` on the target), as two agents run them. Off for
   * the simulation's 8 GiB world: its stream really moves that many bytes.
   */
  readonly streamHalves?: boolean;
}

const signal = new AbortController().signal;
const fails = (reason: string) => (e: unknown) => e instanceof RpcError && e.reason === reason;
const names = (snaps: { ref?: { snapshotName: string } }[] | undefined) =>
  snaps?.map((s) => s.ref?.snapshotName);
const seconds = (iso: string) => BigInt(Date.parse(iso) / 1000);

/** The storage driver conformance suite: the same behaviour from every implementation. */
export function describeStorageConformance(subject: ConformanceSubject): void {
  const scenario = (name: string, title: string, body: (driver: StorageDriver) => Promise<void>) =>
    it(title, async () => {
      const { driver, done } = await subject.setup(name);
      await body(driver);
      done();
    });

  if (subject.backend === "zfs") {
    const on1 = { dataset: ZFS_DISK, nodeId: "node-01" };
    describe(`ZFS storage driver: ${subject.name}`, () => {
      scenario(
        "list",
        "lists a dataset's snapshots oldest first with creation time, size and holds",
        async (d) => {
          const snaps = await d.listSnapshots(ZFS_DISK, signal, "node-01");
          assert.deepEqual(names(snaps), [DAY1, DAY2, HELD]);
          assert.equal(snaps?.[0]?.created?.seconds, seconds("2026-11-20T00:00:00Z"));
          assert.deepEqual(
            snaps?.map((s) => s.held),
            [false, false, true],
          );
          assert.equal(snaps?.[2]?.userRefs, 1);
          assert.deepEqual(snaps?.[0]?.labels, { label: "daily" });
          assert.ok(snaps?.every((s) => s.sizeBytes > 0n));
        },
      );
      scenario("missing", "answers undefined for a dataset that does not exist", async (d) => {
        const missing = create(DatasetRefSchema, { ...ZFS_DISK, name: "vm-999-disk0" });
        assert.equal(await d.listSnapshots(missing, signal, "node-01"), undefined);
      });
      scenario("create", "takes a snapshot, which then lists newest", async (d) => {
        assert.ok(canReplicate(d));
        const made = await d.createSnapshot({ ...on1, name: MANUAL }, signal);
        assert.equal(made.ref?.snapshotName, MANUAL);
        assert.equal(made.created?.seconds, BigInt(Math.floor(NOW / 1000)));
        assert.equal(names(await d.listSnapshots(ZFS_DISK, signal, "node-01"))?.at(-1), MANUAL);
        await assert.rejects(
          d.createSnapshot({ ...on1, name: DAY2 }, signal),
          fails("SNAPSHOT_EXISTS"),
        );
      });
      scenario(
        "delete",
        "deletes a snapshot; missing is SNAPSHOT_NOT_FOUND, held is SNAPSHOT_HELD",
        async (d) => {
          assert.ok(canReplicate(d));
          await d.deleteSnapshot({ ...on1, name: DAY1 }, signal);
          assert.deepEqual(names(await d.listSnapshots(ZFS_DISK, signal, "node-01")), [DAY2, HELD]);
          await assert.rejects(
            d.deleteSnapshot({ ...on1, name: DAY1 }, signal),
            fails("SNAPSHOT_NOT_FOUND"),
          );
          await assert.rejects(
            d.deleteSnapshot({ ...on1, name: HELD }, signal),
            fails("SNAPSHOT_HELD"),
          );
        },
      );
      scenario(
        "send",
        "sends a full stream to another node, then an incremental one",
        async (d) => {
          assert.ok(canReplicate(d));
          const a = stampedSnapshotName("repl-j1", NOW);
          const b = stampedSnapshotName("repl-j1", NOW + 900_000);
          await d.createSnapshot({ ...on1, name: a }, signal);
          let last = 0;
          const full = await d.sendSnapshot({
            dataset: ZFS_DISK,
            fromNode: "node-01",
            toNode: "node-02",
            snapshot: a,
            signal,
            onProgress: (bytes) => {
              last = bytes;
            },
          });
          assert.ok(full.bytes > 0);
          assert.equal(last, full.bytes, "progress ends at the bytes sent");
          assert.deepEqual(names(await d.listSnapshots(ZFS_DISK, signal, "node-02")), [a]);
          await d.createSnapshot({ ...on1, name: b }, signal);
          const incremental = await d.sendSnapshot({
            dataset: ZFS_DISK,
            fromNode: "node-01",
            toNode: "node-02",
            snapshot: b,
            base: a,
            signal,
          });
          assert.ok(incremental.bytes > 0 && incremental.bytes < full.bytes);
          assert.deepEqual(names(await d.listSnapshots(ZFS_DISK, signal, "node-02")), [a, b]);
        },
      );
      if (subject.streamHalves === true) {
        /** One send as two agents run it: the source's stream piped into the target's receive. */
        const halves = async (d: StorageDriver, to: string, snapshot: string, base?: string) => {
          assert.ok(canStream(d));
          const sending = await d.openSendStream({
            dataset: ZFS_DISK,
            nodeId: "node-01",
            snapshot,
            base,
            signal,
          });
          const received = await d.receiveStream({
            dataset: ZFS_DISK,
            nodeId: to,
            base,
            stream: sending.stream,
            signal,
          });
          await sending.done;
          return received;
        };
        scenario(
          "send",
          "sends in two halves (stream out on the source, in on the target), full then incremental",
          async (d) => {
            assert.ok(canStream(d));
            const a = stampedSnapshotName("repl-j1", NOW);
            const b = stampedSnapshotName("repl-j1", NOW + 900_000);
            await d.createSnapshot({ ...on1, name: a }, signal);
            const full = await halves(d, "node-02", a);
            assert.ok(full.bytes > 0);
            assert.deepEqual(names(await d.listSnapshots(ZFS_DISK, signal, "node-02")), [a]);
            await d.createSnapshot({ ...on1, name: b }, signal);
            const incremental = await halves(d, "node-02", b, a);
            assert.ok(incremental.bytes > 0 && incremental.bytes < full.bytes);
            assert.deepEqual(names(await d.listSnapshots(ZFS_DISK, signal, "node-02")), [a, b]);
          },
        );
        scenario(
          "diverged",
          "in two halves, refuses a full stream onto a node that already holds the dataset",
          async (d) => {
            assert.ok(canStream(d));
            const a = stampedSnapshotName("repl-j1", NOW);
            await d.createSnapshot({ ...on1, name: a }, signal);
            await assert.rejects(halves(d, "node-03", a), fails("REPLICATION_DIVERGED"));
          },
        );
      }
      scenario(
        "diverged",
        "refuses a full send onto a node that already holds the dataset",
        async (d) => {
          assert.ok(canReplicate(d));
          const a = stampedSnapshotName("repl-j1", NOW);
          await d.createSnapshot({ ...on1, name: a }, signal);
          await assert.rejects(
            d.sendSnapshot({
              dataset: ZFS_DISK,
              fromNode: "node-01",
              toNode: "node-03",
              snapshot: a,
              signal,
            }),
            fails("REPLICATION_DIVERGED"),
          );
        },
      );
      scenario(
        "names",
        "refuses names that could reach a command as an option or another dataset",
        async (d) => {
          assert.ok(canReplicate(d));
          const bad = [
            create(DatasetRefSchema, { ...ZFS_DISK, name: "-o" }),
            create(DatasetRefSchema, { ...ZFS_DISK, name: "a/../b" }),
            create(DatasetRefSchema, { ...ZFS_DISK, name: "vm@snap" }),
            create(DatasetRefSchema, { ...ZFS_DISK, pool: "mirror" }),
          ];
          for (const dataset of bad)
            await assert.rejects(
              d.listSnapshots(dataset, signal, "node-01"),
              fails("INVALID_ARGUMENT"),
            );
          await assert.rejects(
            d.createSnapshot({ ...on1, name: "-r" }, signal),
            fails("INVALID_ARGUMENT"),
          );
          await assert.rejects(
            d.createSnapshot({ ...on1, name: "a b" }, signal),
            fails("INVALID_ARGUMENT"),
          );
        },
      );
    });
    return;
  }

  const rbd = { dataset: RBD_DISK };
  const clone1 = create(DatasetRefSchema, {
    backend: StorageBackend.BACKEND_RBD,
    pool: "rbd",
    name: "acme-clone1",
  });
  describe(`RBD storage driver: ${subject.name}`, () => {
    scenario(
      "list",
      "lists an image's snapshots oldest first with creation time, size and protection",
      async (d) => {
        const snaps = await d.listSnapshots(RBD_DISK, signal);
        assert.deepEqual(names(snaps), [DAY1, DAY2]);
        assert.equal(snaps?.[1]?.created?.seconds, seconds("2026-11-21T00:00:00Z"));
        assert.deepEqual(
          snaps?.map((s) => s.protected),
          [false, true],
        );
        assert.deepEqual(
          snaps?.map((s) => s.held),
          [false, true],
        );
        assert.equal(snaps?.[0]?.sizeBytes, BigInt(10 * GIB));
      },
    );
    scenario("missing", "answers undefined for an image that does not exist", async (d) => {
      const missing = create(DatasetRefSchema, { ...RBD_DISK, name: "vm-999-disk0" });
      assert.equal(await d.listSnapshots(missing, signal), undefined);
    });
    scenario("create", "takes a snapshot, which then lists newest", async (d) => {
      assert.ok(canClone(d));
      const made = await d.createSnapshot({ ...rbd, name: MANUAL }, signal);
      assert.equal(made.ref?.snapshotName, MANUAL);
      assert.equal(made.created?.seconds, BigInt(Math.floor(NOW / 1000)));
      assert.equal(names(await d.listSnapshots(RBD_DISK, signal))?.at(-1), MANUAL);
      await assert.rejects(
        d.createSnapshot({ ...rbd, name: DAY2 }, signal),
        fails("SNAPSHOT_EXISTS"),
      );
    });
    scenario("clone", "protects a snapshot, clones it and lists the clone", async (d) => {
      assert.ok(canClone(d));
      await d.protectSnapshot({ ...rbd, name: DAY1 }, signal);
      await d.cloneSnapshot({ ...rbd, name: DAY1 }, clone1, signal);
      assert.deepEqual(
        (await d.listClones({ ...rbd, name: DAY1 }, signal)).map((c) => `${c.pool}/${c.name}`),
        ["rbd/acme-clone1"],
      );
      await assert.rejects(
        d.cloneSnapshot({ ...rbd, name: DAY1 }, clone1, signal),
        fails("DATASET_EXISTS"),
      );
    });
    scenario("delete", "refuses to delete a template with clones; deletes others", async (d) => {
      assert.ok(canClone(d));
      await assert.rejects(
        d.deleteSnapshot({ ...rbd, name: DAY2 }, signal),
        fails("SNAPSHOT_HAS_CLONES"),
      );
      await d.deleteSnapshot({ ...rbd, name: DAY1 }, signal);
      assert.deepEqual(names(await d.listSnapshots(RBD_DISK, signal)), [DAY2]);
      await assert.rejects(
        d.deleteSnapshot({ ...rbd, name: DAY1 }, signal),
        fails("SNAPSHOT_NOT_FOUND"),
      );
    });
    scenario(
      "images",
      "tells a clone's parent, flattens it, and deletes images once no clone depends on them",
      async (d) => {
        assert.ok(canManageImages(d));
        const base = create(DatasetRefSchema, { ...RBD_DISK, name: "acme-base" });
        const parent = await d.imageParent(base, signal);
        assert.equal(
          `${parent?.dataset.pool}/${parent?.dataset.name}@${parent?.name}`,
          `rbd/vm-200-disk0@${DAY2}`,
        );
        assert.equal(await d.imageParent(RBD_DISK, signal), undefined);
        await assert.rejects(d.deleteImage(RBD_DISK, signal), fails("IMAGE_HAS_CLONES"));
        await assert.rejects(d.flattenImage(RBD_DISK, signal), fails("IMAGE_NOT_A_CLONE"));
        await d.flattenImage(base, signal);
        assert.equal(await d.imageParent(base, signal), undefined);
        await d.deleteImage(base, signal);
        await d.deleteImage(RBD_DISK, signal);
        assert.equal(await d.listSnapshots(RBD_DISK, signal), undefined);
      },
    );
    scenario(
      "names",
      "refuses names that could reach a command as an option or another image",
      async (d) => {
        assert.ok(canClone(d));
        for (const name of ["-p", "ns/image", "img@snap"])
          await assert.rejects(
            d.listSnapshots(create(DatasetRefSchema, { ...RBD_DISK, name }), signal),
            fails("INVALID_ARGUMENT"),
          );
        await assert.rejects(
          d.cloneSnapshot(
            { ...rbd, name: DAY2 },
            create(DatasetRefSchema, { ...clone1, name: "--force" }),
            signal,
          ),
          fails("INVALID_ARGUMENT"),
        );
      },
    );
  });
}
