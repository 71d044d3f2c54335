import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type DaemonProcess,
  devDaemonArgs,
  HVCTL_BIN,
  startDaemonProcess,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { runHvctlInProcess } from "./helpers/hvctl-in-process.js";

interface Snapshot {
  ref: { snapshotName: string };
  created: string;
  sizeBytes: string;
  held: boolean;
  protected: boolean;
  replicationBase: boolean;
  labels: Record<string, string>;
}
interface Status {
  jobId: string;
  state: string;
  lastSnapshotName: string;
  bytesTransferred: string;
  incremental: boolean;
  baseSnapshotName: string;
  successfulRuns: string;
}
interface Job {
  jobId: string;
  plan: { policy: string; dataset: { backend: string; pool: string; name: string } };
  status: Status;
}

/**
 * How long the send of the job run from two shells at once lasts: far longer
 * than a loaded machine takes to start the second hvctl and reach the daemon.
 */
const SEND_SECONDS = 10;

/**
 * hvctl's storage nouns (snapshot, replication, image) as an operator runs
 * them against one dev-mode daemon, whose simulated ZFS datasets, RBD images
 * and replication jobs they work on: hvctl in this process, and the built
 * binary as a child process where two shells run at once (a run and a watch).
 */
describe("hvctl storage commands against a dev daemon", () => {
  let daemon: DaemonProcess;
  let config: string;
  let home: string;
  /** A ZFS disk of a simulated VM (zfs:POOL/NAME), the node holding it and a node it is not replicated to yet. */
  let zfs: string;
  let source: string;
  let target: string;
  /** Every ZFS disk with its node and a node that holds no copy of it yet. */
  let fresh: { dataset: string; source: string; target: string }[];
  /** An RBD disk of a simulated VM, as POOL/IMAGE. */
  let rbd: string;

  const hvctl = (...args: string[]) =>
    runHvctlInProcess(["--config", config, ...args], { HOME: home });
  /** hvctl started in the background: what it printed so far, and how it ended. */
  const started = (...args: string[]) => {
    const proc = spawn(process.execPath, [HVCTL_BIN, "--config", config, ...args], {
      env: {
        ...process.env,
        HOME: home,
        DEBVISOR_CONTEXT: "",
        DEBVISOR_SERVER: "",
        DEBVISOR_TOKEN: "",
      },
    });
    const printed = { stdout: "", stderr: "" };
    proc.stdout.on("data", (d: Buffer) => {
      printed.stdout += d.toString();
    });
    proc.stderr.on("data", (d: Buffer) => {
      printed.stderr += d.toString();
    });
    const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) =>
      proc.once("close", (code) => r({ code, ...printed })),
    );
    return { printed, exited };
  };
  const ok = async (...args: string[]) => {
    const r = await hvctl(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r;
  };
  const json = async <T>(...args: string[]) =>
    JSON.parse((await ok("-o", "json", ...args)).stdout) as T;
  const snapshots = async (dataset: string) =>
    (await json<{ snapshots: Snapshot[] }>("snapshot", "list", dataset)).snapshots;
  const names = (list: readonly Snapshot[]) => list.map((s) => s.ref.snapshotName);
  /** `replication plan` of the test dataset from its node to the target, then `flags`. */
  const plan = (...flags: string[]) => [
    "replication",
    "plan",
    "--dataset",
    zfs,
    "--source",
    source,
    "--target",
    target,
    ...flags,
  ];
  /** Runs hvctl expecting exit `code` and a one-line error matching `message`. */
  const fails = async (code: number, message: RegExp, ...args: string[]) => {
    const r = await hvctl(...args);
    assert.equal(r.code, code, `hvctl ${args.join(" ")}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stdout, "");
    return r;
  };

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "dv-hvctl-storage-"));
    home = mkdtempSync(join(tmpdir(), "dv-hvctl-storage-home-"));
    daemon = await startDaemonProcess(devDaemonArgs(dir));
    config = join(dir, "hvctl.yaml");
    type Vm = {
      nodeId: { id: string };
      disks: { backend: string; pool: string; name: string }[];
    };
    const { vms } = await json<{ vms: Vm[] }>("vm", "list");
    const disks = (backend: string) =>
      vms.flatMap((v) =>
        v.disks
          .filter((d) => d.backend === backend)
          .map((d) => ({ node: v.nodeId.id, path: `${d.pool}/${d.name}` })),
      );
    rbd = disks("BACKEND_RBD")[0]?.path ?? "";
    assert.notEqual(rbd, "", "the dev cluster has an RBD disk");
    // Dev mode replicates every ZFS disk to one other node; these go to a third, which has no copy.
    const { jobs } = await json<{
      jobs: (Job & { plan: { target: { nodeId: { id: string } } } })[];
    }>("replication", "list");
    const nodes = (await json<{ nodes: { info: { id: { id: string } } }[] }>("node", "list")).nodes;
    fresh = disks("BACKEND_ZFS").map((z) => {
      const seeded = jobs.filter((j) => `${j.plan.dataset.pool}/${j.plan.dataset.name}` === z.path);
      const to = nodes
        .map((n) => n.info.id.id)
        .find((id) => id !== z.node && !seeded.some((j) => j.plan.target.nodeId.id === id));
      assert.ok(to !== undefined, `a node ${z.path} is not replicated to yet`);
      return { dataset: `zfs:${z.path}`, source: z.node, target: to };
    });
    assert.ok(fresh.length >= 2, "the dev cluster has two ZFS disks");
    ({ dataset: zfs, source, target } = fresh[0] as (typeof fresh)[0]);
  });
  after(() => daemon?.kill());

  describe("snapshots", () => {
    it("takes, lists and deletes a snapshot, in both spellings of a snapshot", async () => {
      const made = await json<{ snapshot: { snapshotName: string; dataset: { backend: string } } }>(
        "snapshot",
        "create",
        zfs,
        "--label",
        "cli-test",
      );
      const name = made.snapshot.snapshotName;
      assert.match(name, /^cli-test-\d{8}T\d{6}Z$/);
      assert.equal(made.snapshot.dataset.backend, "BACKEND_ZFS");
      const listed = (await snapshots(zfs)).find((s) => s.ref.snapshotName === name);
      assert.equal(listed?.labels.label, "cli-test");
      assert.match(listed?.created ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

      const table = (await ok("snapshot", "list", zfs)).stdout;
      assert.match(table, /^NAME\s+AGE\s+SIZE\s+IN USE\n/);
      assert.match(table, new RegExp(`^${name}\\s+\\d+s\\s+[\\d.]+ (B|KiB|MiB|GiB)\\s+-$`, "m"));
      assert.match(table, /^daily-\d{8}T000000Z\s+\d+[hd]\s+[\d.]+ GiB\s+-$/m, "ages and sizes");
      const wide = (await ok("snapshot", "list", zfs, "-o", "wide")).stdout;
      assert.match(wide, new RegExp(`^${name}\\s.*\\scli-test\\s+0\\s+\\d{4}-\\d\\d-\\d\\dT`, "m"));

      // A bare POOL/NAME is ZFS, and DATASET NAME works as well as DATASET@NAME.
      const second = (
        await json<{ snapshot: { snapshotName: string } }>("snapshot", "create", zfs.slice(4))
      ).snapshot.snapshotName;
      assert.match(second, /^manual-/);
      const del = await ok("snapshot", "delete", `${zfs}@${name}`);
      assert.equal(del.stdout, `snapshot ${zfs}@${name} deleted\n`);
      await ok("snapshot", "delete", zfs.slice(4), second);
      const left = names(await snapshots(zfs));
      assert.ok(!left.includes(name) && !left.includes(second), "both are gone");
      await fails(
        5,
        /^hvctl: snapshot not found: hvctl snapshot list DATASET/,
        "snapshot",
        "delete",
        `${zfs}@${name}`,
      );
    });

    it("lists the snapshots of an RBD image, and says how a bare name was read when not found", async () => {
      const list = await snapshots(`rbd:${rbd}`);
      assert.ok(list.length > 0);
      const r = await fails(5, /dataset not found/, "snapshot", "list", rbd);
      assert.match(
        r.stderr,
        new RegExp(`^note: ${rbd} was read as a ZFS dataset .*write rbd:${rbd}$`, "m"),
      );
    });
  });

  describe("replication", () => {
    it("plans a job, and the same plan again answers the same job", async () => {
      const args = plan("--id", "cli-repl", "--interval", "1h", "--keep", "2", "--bandwidth", "4G");
      const job = await json<Job>(...args);
      assert.equal(job.jobId, "cli-repl");
      assert.equal(job.plan.policy, "interval=1h keep=2 bwlimit=4G");
      assert.equal(`zfs:${job.plan.dataset.pool}/${job.plan.dataset.name}`, zfs);
      const again = await ok(...args);
      assert.match(
        again.stdout,
        new RegExp(
          `^replication job cli-repl planned: ${zfs} from ${source} to ${target} \\(interval=1h keep=2 bwlimit=4G\\)`,
        ),
      );
    });

    let first: string;
    it("runs a job with progress lines when not on a terminal: a full send first", async () => {
      const r = await ok("replication", "run", "cli-repl");
      assert.equal(r.stdout, "", "progress and the outcome go to stderr in table output");
      assert.ok(
        !r.stderr.includes("\r") && !r.stderr.includes("\x1b"),
        "no bar and no escape codes off a terminal",
      );
      const lines = r.stderr
        .split("\n")
        .filter((l) => /^replication cli-repl: sending full stream \d+%/.test(l));
      assert.ok(lines.length >= 3, `progress lines while sending:\n${r.stderr}`);
      assert.match(
        r.stderr,
        /^replication cli-repl: sending full stream \d+% \([\d.]+ [KMG]iB\/s, ETA \d+s\)$/m,
      );
      assert.match(
        r.stderr,
        /^replication cli-repl: succeeded: sent [\d.]+ GiB \(full\) in \d+s; snapshot (repl-cli-repl-\d{8}T\d{6}Z)$/m,
      );
      first = /snapshot (repl-cli-repl-\S+)$/m.exec(r.stderr)?.[1] ?? "";
    });

    it("runs it again: incremental from the first run's snapshot, the outcome as JSON", async () => {
      const r = await ok("-o", "json", "replication", "run", "cli-repl");
      const s = JSON.parse(r.stdout) as Status;
      assert.equal(s.state, "REPL_STATE_SUCCESS");
      assert.equal(s.incremental, true);
      assert.equal(s.baseSnapshotName, first);
      assert.notEqual(s.lastSnapshotName, first);
      assert.equal(s.successfulRuns, "2");
      assert.match(
        r.stderr,
        /^replication cli-repl: succeeded: sent [\d.]+ [KMG]?i?B \(incremental from repl-cli-repl-/m,
      );

      const status = await json<Status>("replication", "status", "cli-repl");
      assert.equal(status.lastSnapshotName, s.lastSnapshotName);
      const fields = (await ok("replication", "status", "cli-repl")).stdout;
      assert.match(fields, /^state:\s+Succeeded$/m);
      assert.match(fields, /^successful runs:\s+2$/m);
      assert.match(fields, /^next run:\s+\S+ \(in (59|60)m\)$/m);
    });

    it("lists jobs as a table, wide and JSON", async () => {
      const { jobs } = await json<{ jobs: Job[] }>("replication", "list");
      const mine = jobs.find((j) => j.jobId === "cli-repl");
      assert.equal(mine?.status.state, "REPL_STATE_SUCCESS");
      assert.ok(jobs.length >= 2, "the dev cluster's jobs as well");
      const table = (await ok("replication", "list")).stdout;
      assert.match(table, /^ID\s+DATASET\s+SOURCE\s+TARGET\s+STATE\s+LAST SUCCESS\s+NEXT RUN\n/);
      assert.match(
        table,
        new RegExp(
          `^cli-repl\\s+${zfs}\\s+${source}\\s+${target}\\s+Succeeded\\s+\\d+s ago\\s+in \\d+m$`,
          "m",
        ),
      );
      const wide = (await ok("replication", "list", "-o", "wide")).stdout;
      assert.match(
        wide,
        /^cli-repl\s.*\sinterval=1h keep=2 bwlimit=4G\s+repl-cli-repl-\S+\s+[\d.]+ [KMG]?i?B\s+\d+s\s+2\s+0\s+-$/m,
      );
    });
    it("runs a job from two shells at once: one run, the other follows it to the same end", async () => {
      const other = fresh[1] as (typeof fresh)[0];
      // A send that lasts SEND_SECONDS at its bandwidth limit, so the second shell surely comes while it runs.
      type Dataset = { dataset: { pool: string; name: string }; sizeBytes: string };
      const { datasets } = await json<{ datasets: Dataset[] }>(
        "dataset",
        "list",
        "--backend",
        "zfs",
      );
      const size = Number(
        datasets.find((d) => `zfs:${d.dataset.pool}/${d.dataset.name}` === other.dataset)
          ?.sizeBytes,
      );
      assert.ok(size > 0, `the size of ${other.dataset}`);
      await ok(
        "replication",
        "plan",
        "--dataset",
        other.dataset,
        "--source",
        other.source,
        "--target",
        other.target,
        "--id",
        "cli-twice",
        "--interval",
        "1h",
        "--bandwidth",
        String(Math.ceil(size / SEND_SECONDS)),
      );
      const first = started("-o", "json", "replication", "run", "cli-twice");
      // The second shell starts once the first shows the run going (its own or the scheduler's).
      await eventually(
        () => assert.match(first.printed.stderr, /^replication cli-twice: (snapshotting|sending)/m),
        { timeoutMs: 30_000 },
      );
      const second = await hvctl("-o", "json", "replication", "run", "cli-twice");
      const both = [await first.exited, second];
      for (const r of both) assert.equal(r.code, 0, r.stderr);
      const [a, b] = both.map((r) => JSON.parse(r.stdout) as Status);
      assert.equal(a?.state, "REPL_STATE_SUCCESS");
      assert.equal(b?.state, "REPL_STATE_SUCCESS");
      assert.equal(a?.lastSnapshotName, b?.lastSnapshotName, "the same run");
      assert.equal(a?.successfulRuns, "1", "one run, not two");
      assert.equal(b?.successfulRuns, "1", "one run, not two");
      assert.match(
        second.stderr,
        /^replication cli-twice is already running \(started by the scheduler or another caller\); watching that run$/m,
      );
      await ok("replication", "delete", "cli-twice");
    });
  });

  describe("retention", () => {
    it("shows a dry run, removes nothing, then removes exactly that and keeps the replication base", async () => {
      await ok("snapshot", "create", zfs, "--label", "newest");
      const before = names(await snapshots(zfs));
      const base = (await json<Status>("replication", "status", "cli-repl")).lastSnapshotName;
      const args = ["snapshot", "prune", zfs, "--keep-last", "1"];
      const dry = await json<{
        dryRun: boolean;
        removed: Snapshot[];
        keptInUse: Snapshot[];
        removedCount: number;
      }>(...args, "--dry-run");
      assert.equal(dry.dryRun, true);
      assert.ok(dry.removed.length > 0);
      assert.equal(dry.removedCount, dry.removed.length);
      assert.ok(names(dry.keptInUse).includes(base), "the job's incremental base stays");
      assert.ok(dry.keptInUse.every((s) => s.replicationBase || s.held || s.protected));
      assert.deepEqual(names(await snapshots(zfs)), before, "a dry run removes nothing");

      const table = (await ok(...args, "--dry-run")).stdout;
      assert.match(
        table,
        new RegExp(`^${zfs}: dry run: would remove ${dry.removed.length}, keep \\d+$`, "m"),
      );
      assert.match(table, /^WOULD REMOVE\s+AGE\s+SIZE\s+IN USE$/m);
      assert.match(
        table,
        new RegExp(
          `^KEPT, IN USE\\s+AGE\\s+SIZE\\s+IN USE\\n(.*\\n)*${base}\\s+\\d+s\\s+\\S+ \\S+\\s+replication base$`,
          "m",
        ),
      );

      const real = await json<{ dryRun: boolean; removed: Snapshot[] }>(...args);
      assert.equal(real.dryRun, false);
      assert.deepEqual(names(real.removed), names(dry.removed));
      const after = names(await snapshots(zfs));
      assert.deepEqual(
        after,
        before.filter((n) => !names(dry.removed).includes(n)),
      );
      assert.ok(after.includes(base) && after.at(-1)?.startsWith("newest-"));
    });
  });

  describe("RBD templates and clones", () => {
    it("makes a protected template, clones it for a tenant, and refuses to delete it while the clone depends on it", async () => {
      const made = await json<{ snapshot: { snapshotName: string } }>(
        "image",
        "template",
        rbd,
        "--label",
        "golden",
      );
      const template = made.snapshot.snapshotName;
      assert.match(template, /^golden-\d{8}T\d{6}Z$/);
      const listed = (await snapshots(`rbd:${rbd}`)).find((s) => s.ref.snapshotName === template);
      assert.equal(listed?.protected, true);
      assert.match(
        (await ok("snapshot", "list", `rbd:${rbd}`)).stdout,
        new RegExp(`^${template}\\s.*\\sprotected$`, "m"),
      );

      const pool = rbd.split("/")[0];
      const clone = await json<{ clone: { backend: string; pool: string; name: string } }>(
        "image",
        "clone",
        `${rbd}@${template}`,
        "--to",
        `${pool}/acme-cli-clone`,
        "--tenant",
        "acme",
      );
      assert.deepEqual(clone.clone, { backend: "BACKEND_RBD", pool, name: "acme-cli-clone" });
      await ok("snapshot", "list", `rbd:${pool}/acme-cli-clone`);
      await fails(
        1,
        /^hvctl: snapshot has clones: /,
        "snapshot",
        "delete",
        `rbd:${rbd}@${template}`,
      );
      const daily =
        (await snapshots(`rbd:${rbd}`)).find((s) => !s.protected)?.ref.snapshotName ?? "";
      await fails(
        1,
        /snapshot is not a protected template: make a template with hvctl image template/,
        "image",
        "clone",
        `${rbd}@${daily}`,
        "--to",
        `${pool}/acme-cli-clone-2`,
      );
    });
  });

  describe("watching and deleting a replication job", () => {
    it("watches an idle job until it is deleted (exit 5), and the job is gone", async () => {
      const watch = started("replication", "watch", "cli-repl");
      // The watch is open once it has said what it waits for; then delete the job under it.
      await eventually(() => assert.match(watch.printed.stderr, /waiting for its next run/));
      const del = await ok("replication", "delete", "cli-repl");
      assert.equal(del.stdout, "replication job cli-repl deleted; the replicated data stays\n");
      const w = await watch.exited;
      assert.equal(w.code, 5, w.stderr);
      assert.match(
        w.stderr,
        /^replication cli-repl is not running; waiting for its next run \(in \d+m\)/m,
      );
      assert.match(w.stderr, /^replication cli-repl: the job was deleted$/m);
      await fails(
        5,
        /^hvctl: replication job not found: hvctl replication list/,
        "replication",
        "status",
        "cli-repl",
      );
      await fails(5, /replication job not found/, "replication", "run", "cli-repl");
    });
  });

  describe("refusals", () => {
    it("exits 2 on a bad DATASET or flag, before anything is sent", async () => {
      const before = names(await snapshots(zfs));
      for (const [args, message] of [
        [["snapshot", "list", "zfs:tank"], /DATASET: expected POOL\/NAME, got "zfs:tank"/],
        [["snapshot", "list", "ceph:rbd/x"], /unknown storage "ceph:"/],
        [["snapshot", "create", zfs, "--label", "no spaces"], /--label: at most 80 letters/],
        [["snapshot", "create", `${zfs}@x`], /names a snapshot/],
        [["snapshot", "delete", zfs], /expected DATASET@NAME/],
        [["snapshot", "prune", zfs], /the policy keeps nothing/],
        [["snapshot", "prune", zfs, "--keep-last", "x"], /--keep-last: expected a whole number/],
        [
          [
            "replication",
            "plan",
            "--dataset",
            `rbd:${rbd}`,
            "--source",
            source,
            "--target",
            target,
          ],
          /replication takes ZFS datasets/,
        ],
        [plan("--interval", "10s"), /--interval: .* from 1m to 30d/],
        [plan("--bandwidth", "fast"), /--bandwidth: expected bytes per second/],
        [
          ["replication", "plan", "--dataset", zfs, "--source", source, "--target", source],
          /--target: must be another node/,
        ],
        [["image", "clone", `zfs:tank/x@s`, "--to", "rbd/y"], /templates are RBD snapshots/],
      ] as const)
        await fails(2, message, ...args);
      assert.deepEqual(names(await snapshots(zfs)), before, "nothing changed");
      const { jobs } = await json<{ jobs: Job[] }>("replication", "list");
      assert.ok(
        !jobs.some(
          (j) =>
            j.plan.dataset.name === zfs.split("/").slice(1).join("/") &&
            j.jobId.startsWith("repl-"),
        ),
      );
    });

    it("exits 5 for a dataset, snapshot or job that does not exist", async () => {
      await fails(5, /^hvctl: dataset not found: /, "snapshot", "list", "zfs:tank/no-such-disk");
      await fails(
        5,
        /^hvctl: dataset not found: /,
        "snapshot",
        "prune",
        "zfs:tank/no-such-disk",
        "--keep-last",
        "1",
        "--dry-run",
      );
      await fails(5, /^hvctl: replication job not found/, "replication", "watch", "no-such-job");
      await fails(5, /^hvctl: replication job not found/, "replication", "delete", "no-such-job");
    });

    it("says in --help that a bare POOL/NAME is ZFS", async () => {
      const help = (await ok("snapshot", "list", "--help")).stdout;
      assert.match(help, /POOL\/NAME \(ZFS\)/);
      assert.match(
        (await ok("snapshot", "--help")).stdout,
        /without a prefix, POOL\/NAME means ZFS/,
      );
    });
  });
});
