// The libvirt driver against recorded virsh output: the exact argument arrays
// it runs, how it reads what virsh prints, and how it maps failures. The same
// driver against the real virsh is in libvirt-virsh.test.ts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { REASONS, RpcError } from "../src/core/index.js";
import {
  createLibvirtDriver,
  type LibvirtDriverOptions,
  type MigrationProgress,
  migrationUriProblem,
  VirshCommandError,
  virshMigrateArgs,
} from "../src/drivers/index.js";
import {
  createReplayRunner,
  fixture,
  type Recording,
  type ReplayStep,
} from "./helpers/virsh-replay.js";

const NODE = "test:///tmp/dv-node/node.xml";
const QEMU = "qemu:///system";
const DEST = { nodeId: "hv02", uri: "qemu+ssh://hv02/system" };
/** DebVisor's metadata namespace, as libvirt-domain-xml.ts writes it. */
const VM_XMLNS = "https://debvisor.io/xmlns/vm/1";
const live = () => new AbortController().signal;
const isReason = (reason: string) => (e: unknown) => e instanceof RpcError && e.reason === reason;

function driverWith(
  steps: readonly (ReplayStep | Recording)[],
  options: Partial<LibvirtDriverOptions> = {},
) {
  const replay = createReplayRunner(steps);
  const driver = createLibvirtDriver({
    nodeId: "hv01",
    uri: options.uri ?? NODE,
    runner: replay.run,
    pollIntervalMs: 1,
    ...options,
  });
  return { driver, replay };
}

describe("libvirt driver: inventory (recorded output)", () => {
  it("lists with list --all --name, then dominfo --domain per domain, sorted by name", async () => {
    const { driver, replay } = driverWith([
      fixture("node-list"),
      fixture("node-dominfo-cache-01"),
      fixture("node-dominfo-db-01"),
      fixture("node-dominfo-scratch-01"),
      fixture("node-dominfo-web-01"),
    ]);
    const list = await driver.list(live());
    assert.deepEqual(list, [
      { id: "cache-01", state: "paused", vcpus: 1, memoryBytes: 1024n ** 3n, persistent: true },
      { id: "db-01", state: "stopped", vcpus: 4, memoryBytes: 4n * 1024n ** 3n, persistent: true },
      {
        id: "scratch-01",
        state: "running",
        vcpus: 1,
        memoryBytes: 512n * 1024n ** 2n,
        persistent: false,
      },
      { id: "web-01", state: "running", vcpus: 2, memoryBytes: 2n * 1024n ** 3n, persistent: true },
    ]);
    assert.equal(replay.remaining(), 0);
  });

  it("leaves out, with a warning, domains whose names the API could not address", async () => {
    const warnings: object[] = [];
    const logger = {
      debug() {},
      info() {},
      warn(obj: object) {
        warnings.push(obj);
      },
      error() {},
      child() {
        return logger;
      },
    };
    const { driver } = driverWith(
      [
        fixture("node-list", { stdout: "web-01\nWin10 Desktop\n--help\n\n" }),
        fixture("node-dominfo-web-01"),
      ],
      { logger },
    );
    assert.deepEqual(
      (await driver.list(live())).map((d) => d.id),
      ["web-01"],
    );
    assert.equal(warnings.length, 2);
  });

  it("answers undefined for a domain virsh cannot find", async () => {
    const { driver } = driverWith([
      fixture("default-dominfo-missing", { args: ["-c", NODE, "dominfo", "--domain", "ghost-01"] }),
    ]);
    assert.equal(await driver.info("ghost-01", live()), undefined);
  });

  it("maps a hypervisor it cannot reach to BACKEND_UNAVAILABLE, stderr only in the cause", async () => {
    const { driver } = driverWith([fixture("qemu-unreachable-list")], { uri: QEMU });
    const err = await driver.list(live()).then(
      () => assert.fail("listed"),
      (e: unknown) => e,
    );
    assert.ok(isReason("BACKEND_UNAVAILABLE")(err));
    const rpc = err as RpcError;
    assert.equal(rpc.clientMessage, REASONS.BACKEND_UNAVAILABLE.message);
    assert.ok(rpc.cause instanceof VirshCommandError);
    assert.match(
      rpc.cause.message,
      /virsh -c qemu:\/\/\/system list --all --name: exit 1: .*libvirt-sock/s,
    );
  });

  it("maps output it cannot parse to BACKEND_FAILED", async () => {
    const { driver } = driverWith([
      fixture("node-dominfo-web-01", { stdout: "Name: web-01\nState: running\n" }),
    ]);
    await assert.rejects(driver.info("web-01", live()), isReason("BACKEND_FAILED"));
  });

  it("maps a runner timeout to BACKEND_TIMEOUT", async () => {
    const { driver, replay } = driverWith([{ reply: fixture("node-list"), hang: true }], {
      timeoutMs: 20,
    });
    await assert.rejects(driver.list(live()), isReason("BACKEND_TIMEOUT"));
    assert.equal(replay.calls[0]?.killedBy, "timeout");
  });

  it("keeps a call deadline's DEADLINE_EXCEEDED when the signal carries it", async () => {
    const { driver } = driverWith([{ reply: fixture("node-list"), hang: true }]);
    const ac = new AbortController();
    const listing = driver.list(ac.signal);
    ac.abort(new RpcError("DEADLINE_EXCEEDED"));
    await assert.rejects(listing, isReason("DEADLINE_EXCEEDED"));
  });
});

describe("libvirt driver: HA flag (virsh 9.0 output)", () => {
  const metadata = (vm: string) => ["-c", NODE, "metadata", "--domain", vm, "--uri", VM_XMLNS];

  it("reads ha of DebVisor's metadata with metadata --domain NAME --uri NS; none is not HA", async () => {
    const { driver, replay } = driverWith([
      { args: metadata("web-01"), exitCode: 0, stdout: '<vm ha="true"/>\n\n' },
      { args: metadata("db-01"), exitCode: 0, stdout: '<vm ha="false"/>\n\n' },
      {
        args: metadata("cache-01"),
        exitCode: 1,
        stdout: "",
        stderr: "error: metadata not found: Requested metadata element is not present\n\n",
      },
      {
        args: metadata("ghost-01"),
        exitCode: 1,
        stdout: "",
        stderr: "error: failed to get domain 'ghost-01'\n\n",
      },
    ]);
    assert.equal(await driver.haFlag("web-01", live()), true);
    assert.equal(await driver.haFlag("db-01", live()), false);
    assert.equal(await driver.haFlag("cache-01", live()), false, "defined by hand");
    await assert.rejects(driver.haFlag("ghost-01", live()), isReason("VM_NOT_FOUND"));
    assert.equal(replay.remaining(), 0);
  });
});

describe("libvirt driver: power (recorded output)", () => {
  it("starts a stopped domain with start --domain, after checking its state", async () => {
    const { driver, replay } = driverWith([
      fixture("node-domstate-db-01"),
      fixture("node-start-db-01"),
    ]);
    await driver.start("db-01", live());
    assert.equal(replay.remaining(), 0);
  });

  it("resumes a paused domain, and does nothing to a running one", async () => {
    const { driver, replay } = driverWith([
      fixture("node-domstate-cache-01"),
      fixture("node-resume-cache-01"),
      fixture("node-domstate-web-01"),
    ]);
    await driver.start("cache-01", live());
    await driver.start("web-01", live());
    assert.equal(replay.remaining(), 0);
  });

  it("treats 'already running' from a start that lost a race as done", async () => {
    const { driver } = driverWith(
      [
        fixture("qemu-domstate-db-01-stopped"),
        fixture("qemu-start-already-running", {
          args: ["-c", QEMU, "start", "--domain", "db-01"],
        }),
      ],
      { uri: QEMU },
    );
    await driver.start("db-01", live());
  });

  it("answers a start cut off from libvirt after it was sent with BACKEND_FAILED (it may have started), and one that never reached libvirt with BACKEND_UNAVAILABLE", async () => {
    const startFailing = (stderr: string) =>
      driverWith(
        [
          fixture("qemu-domstate-db-01-stopped"),
          fixture("qemu-start-already-running", {
            args: ["-c", QEMU, "start", "--domain", "db-01"],
            stderr,
          }),
        ],
        { uri: QEMU },
      ).driver.start("db-01", live());
    const lost = await startFailing(
      "error: Disconnected from qemu:///system due to end of file\nerror: Failed to start domain 'db-01'\nerror: End of file while reading data: Input/output error\n",
    ).then(
      () => assert.fail("started"),
      (e: unknown) => e,
    );
    assert.ok(isReason("BACKEND_FAILED")(lost), String(lost));
    assert.match((lost as RpcError).clientMessage, /may have started/);
    await assert.rejects(
      startFailing(
        "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': Connection refused\n",
      ),
      isReason("BACKEND_UNAVAILABLE"),
    );
    // virsh 9.0 to an ssh peer that closes as it connects: a connection that never opened.
    await assert.rejects(
      startFailing(
        "error: failed to connect to the hypervisor\nerror: Cannot recv data: ssh: connect to host 127.0.0.1 port 1: Connection refused: Connection reset by peer\n",
      ),
      isReason("BACKEND_UNAVAILABLE"),
    );
  });

  it("shuts down gracefully and waits, polling domstate, until the domain is off", async () => {
    const { driver, replay } = driverWith([
      fixture("node-domstate-web-01"),
      fixture("node-shutdown-web-01"),
      fixture("node-domstate-web-01"),
      fixture("node-domstate-web-01", { stdout: "in shutdown\n\n" }),
      fixture("node-domstate-web-01-after-shutdown"),
    ]);
    await driver.stop("web-01", { force: false, signal: live() });
    assert.equal(replay.remaining(), 0);
  });

  it("gives up with BACKEND_TIMEOUT when the guest ignores the shutdown request", async () => {
    const running = fixture("node-domstate-web-01");
    const { driver } = driverWith(
      [running, fixture("node-shutdown-web-01"), running, running, running, running],
      { shutdownTimeoutMs: 3, pollIntervalMs: 1 },
    );
    await assert.rejects(
      driver.stop("web-01", { force: false, signal: live() }),
      isReason("BACKEND_TIMEOUT"),
    );
  });

  it("powers off with destroy --domain when forced, and does nothing to a stopped domain", async () => {
    const { driver, replay } = driverWith([
      fixture("node-domstate-web-01"),
      fixture("node-destroy-web-01"),
      fixture("node-domstate-web-01-after-shutdown"),
      fixture("node-domstate-db-01"),
    ]);
    await driver.stop("web-01", { force: true, signal: live() });
    await driver.stop("db-01", { force: true, signal: live() });
    assert.equal(replay.remaining(), 0);
  });

  it("treats 'not running' from a shutdown that lost a race as done", async () => {
    const { driver } = driverWith([
      fixture("node-domstate-db-01", { stdout: "running\n\n" }),
      fixture("node-shutdown-db-01"),
      fixture("node-domstate-db-01"),
    ]);
    await driver.stop("db-01", { force: false, signal: live() });
  });

  it("maps virsh's 'failed to get domain' to VM_NOT_FOUND", async () => {
    const { driver } = driverWith([
      fixture("default-domstate-missing", {
        args: ["-c", NODE, "domstate", "--domain", "ghost-01"],
      }),
    ]);
    await assert.rejects(driver.start("ghost-01", live()), isReason("VM_NOT_FOUND"));
  });
});

describe("libvirt driver: identifiers", () => {
  it("refuses hostile domain names and destination URIs without running virsh", async () => {
    const { driver, replay } = driverWith([], { uri: QEMU });
    const names = [
      "-h",
      "--domain=x",
      "a b",
      "x;y",
      "x\ny",
      "$(id)",
      "`id`",
      "a/b",
      "a".repeat(64),
      "",
    ];
    for (const name of names) {
      await assert.rejects(driver.info(name, live()), isReason("INVALID_ARGUMENT"), name);
      await assert.rejects(driver.start(name, live()), isReason("INVALID_ARGUMENT"), name);
      await assert.rejects(driver.haFlag(name, live()), isReason("INVALID_ARGUMENT"), name);
    }
    const uris = [
      "",
      "-c",
      "--desturi=x",
      "qemu+ssh://hv02/system; reboot",
      "qemu+ssh://hv 02/system",
      "qemu+ssh://hv02/system#x",
      "qemu+ssh://$(id)/system",
      "qemu+ssh://hv02/system?x='y'",
      "hv02",
      `qemu+ssh://hv02/${"a".repeat(600)}`,
    ];
    for (const uri of uris) {
      await assert.rejects(
        driver.migrate("web-01", { nodeId: "hv02", uri }, { live: true, signal: live() }),
        isReason("INVALID_ARGUMENT"),
        uri,
      );
    }
    await assert.rejects(
      driver.migrate("web-01", { nodeId: "-x", uri: DEST.uri }, { live: true, signal: live() }),
      isReason("INVALID_ARGUMENT"),
    );
    assert.equal(replay.calls.length, 0);
  });

  it("refuses a destination URI that would make this node run a program, use other credentials or check less", async () => {
    // A destination's URI is what that node reported: virsh here acts on it
    // (the ext transport's command runs on this node, as does ssh's).
    const { driver, replay } = driverWith([], { uri: QEMU });
    const hostile = [
      "qemu+ext:///system?command=/tmp/x",
      "qemu+ssh://hv02/system?command=/tmp/x",
      "qemu+ssh://hv02/system?keyfile=/etc/dv/id&command=/tmp/x",
      "qemu+ssh://hv02/system?netcat=/tmp/x",
      "qemu+unix:///system?socket=/tmp/s",
      "qemu+tls://hv02/system?no_verify=1",
      "qemu+tls://hv02/system?pkipath=/root/pki",
      "qemu+tls://hv02/system?tls_priority=NORMAL",
      "qemu+ssh://hv02/system?known_hosts_verify=ignore",
      "qemu+ssh://hv02/system?name=qemu:///session",
      "qemu+ssh://hv02/system?=x",
      "qemu+ssh://-oProxyCommand/system",
      "qemu+ssh://-l@hv02/system",
      // Another driver, or no host, is opened on the source itself (test:/// reads the file).
      "test:///etc/shadow",
      "test:///dev/zero",
      "qemu:///session",
      "qemu+tls:///system",
      "lxc://hv02/system",
    ];
    for (const uri of hostile)
      await assert.rejects(
        driver.migrate("web-01", { nodeId: "hv02", uri }, { live: true, signal: live() }),
        (e: unknown) => isReason("INVALID_ARGUMENT")(e) && /destination\.uri: /.test(String(e)),
        uri,
      );
    assert.equal(replay.calls.length, 0, "virsh never ran");
    for (const uri of [
      "qemu+tls://hv02/system",
      "qemu://hv02/system",
      "qemu+tcp://hv02:16509/system",
      "qemu+ssh://root@hv02:2222/system?keyfile=/etc/debvisor/id_ed25519&no_tty=1&known_hosts=/etc/debvisor/known_hosts",
      "qemu+libssh2://hv02/system?sshauth=privkey",
    ])
      assert.equal(migrationUriProblem(uri), undefined, uri);
    assert.equal(migrationUriProblem("sim:///var/lib/debvisor/node-02"), undefined);
  });

  it("accepts the URI shapes operators use", () => {
    for (const uri of [
      "qemu:///system",
      "qemu+ssh://root@hv02.example.org/system",
      "qemu+ssh://hv02:2222/system?keyfile=/etc/debvisor/id_ed25519&no_verify=1",
      "qemu+tls://[2001:db8::2]/system",
      "test:///default",
    ]) {
      assert.doesNotThrow(() => createLibvirtDriver({ nodeId: "hv01", uri }), uri);
    }
  });

  it("throws TypeError on bad options (programmer misuse)", () => {
    assert.throws(() => createLibvirtDriver({ nodeId: "HV 01", uri: QEMU }), TypeError);
    assert.throws(
      () => createLibvirtDriver({ nodeId: "hv01", uri: "qemu:///system;x" }),
      TypeError,
    );
    assert.throws(
      () => createLibvirtDriver({ nodeId: "hv01", uri: QEMU, timeoutMs: 0 }),
      TypeError,
    );
    assert.throws(() => createLibvirtDriver({ nodeId: "hv01", uri: QEMU, virsh: "-x" }), TypeError);
  });

  it("derives capabilities: the test driver cannot migrate, qemu can", () => {
    assert.deepEqual(createLibvirtDriver({ nodeId: "hv01", uri: NODE }).capabilities, {
      liveMigration: false,
      offlineMigration: false,
    });
    assert.deepEqual(createLibvirtDriver({ nodeId: "hv01", uri: QEMU }).capabilities, {
      liveMigration: true,
      offlineMigration: true,
    });
  });
});

describe("libvirt driver: migration (recorded and written output)", () => {
  it("migrates live with the exact virsh command and reports progress that never goes back", async () => {
    const reports: MigrationProgress[] = [];
    const { driver, replay } = driverWith(
      [
        fixture("qemu-domstate-web-01-running"),
        fixture("qemu-migrate-live-progress"),
        ...Array.from({ length: 6 }, () => fixture("qemu-domjobinfo-migrating")),
      ],
      { uri: QEMU },
    );
    await driver.migrate("web-01", DEST, {
      live: true,
      signal: live(),
      onProgress: (p) => reports.push(p),
    });
    assert.deepEqual(replay.calls[1]?.args, [
      "-c",
      "qemu:///system",
      "migrate",
      "--live",
      "--persistent",
      "--undefinesource",
      "--verbose",
      "--abort-on-error",
      "--domain",
      "web-01",
      "--desturi",
      "qemu+ssh://hv02/system",
    ]);
    assert.deepEqual(
      reports.map((r) => [r.phase, r.percent]),
      [
        ["preparing", 0],
        ["transferring", 0],
        ["transferring", 12],
        ["transferring", 45],
        ["transferring", 45],
        ["transferring", 80],
        ["transferring", 97],
        ["switchover", 100],
        ["completed", 100],
      ],
    );
    // Bytes and the downtime estimate come from domjobinfo once it has answered.
    const total = (2008n * 1024n ** 3n) / 1000n;
    assert.equal(reports[1]?.bytesTotal, 0n);
    const informed = reports.filter((r) => r.bytesTotal > 0n && r.phase === "transferring");
    assert.ok(informed.length > 0);
    for (const r of informed) {
      assert.equal(r.bytesTotal, total);
      assert.equal(r.bytesTransferred, (412337n * 1024n ** 2n) / 1000n);
      assert.equal(r.downtimeEstimateMs, 300);
    }
    assert.equal(reports.at(-1)?.bytesTransferred, total);
    for (const call of replay.calls.slice(2)) {
      assert.deepEqual(call.args, ["-c", QEMU, "domjobinfo", "--domain", "web-01"]);
    }
  });

  it("migrates peer to peer (--p2p) when the node's libvirtd reaches the destination itself, as in an agent", async () => {
    const p2p = [
      "-c",
      QEMU,
      "migrate",
      "--live",
      "--persistent",
      "--undefinesource",
      "--verbose",
      "--abort-on-error",
      "--p2p",
      "--domain",
      "web-01",
      "--desturi",
      "qemu+tls://hv02.example/system",
    ];
    const { driver, replay } = driverWith(
      [
        fixture("qemu-domstate-web-01-running"),
        fixture("qemu-migrate-live-progress", { args: p2p }),
        ...Array.from({ length: 6 }, () => fixture("qemu-domjobinfo-migrating")),
      ],
      { uri: QEMU, peerToPeer: true },
    );
    await driver.migrate(
      "web-01",
      { nodeId: "hv02", uri: "qemu+tls://hv02.example/system" },
      { live: true, signal: live() },
    );
    assert.deepEqual(replay.calls[1]?.args, p2p);
    assert.deepEqual(
      virshMigrateArgs("db-01", "qemu+tls://hv02.example/system", {
        live: false,
        peerToPeer: true,
      }),
      [
        "migrate",
        "--offline",
        "--persistent",
        "--undefinesource",
        "--p2p",
        "--domain",
        "db-01",
        "--desturi",
        "qemu+tls://hv02.example/system",
      ],
    );
  });

  it("migrates a stopped domain offline, without --live or --verbose", async () => {
    const { driver, replay } = driverWith(
      [fixture("qemu-domstate-db-01-stopped"), fixture("qemu-migrate-offline")],
      { uri: QEMU },
    );
    const phases: string[] = [];
    await driver.migrate("db-01", DEST, {
      live: false,
      signal: live(),
      onProgress: (p) => phases.push(p.phase),
    });
    assert.deepEqual(replay.calls[1]?.args, [
      "-c",
      QEMU,
      "migrate",
      "--offline",
      "--persistent",
      "--undefinesource",
      "--domain",
      "db-01",
      "--desturi",
      DEST.uri,
    ]);
    assert.deepEqual(phases, ["preparing", "completed"]);
  });

  it("refuses offline migration of a running domain without starting one", async () => {
    const { driver, replay } = driverWith([fixture("qemu-domstate-web-01-running")], {
      uri: QEMU,
    });
    await assert.rejects(
      driver.migrate("web-01", DEST, { live: false, signal: live() }),
      isReason("MIGRATION_NOT_ALLOWED"),
    );
    assert.equal(replay.calls.length, 1);
  });

  it("refuses a migration to its own node", async () => {
    const { driver, replay } = driverWith([], { uri: QEMU });
    await assert.rejects(
      driver.migrate("web-01", { nodeId: "hv01", uri: DEST.uri }, { live: true, signal: live() }),
      isReason("MIGRATION_NOT_ALLOWED"),
    );
    assert.equal(replay.calls.length, 0);
  });

  it("fails with BACKEND_FAILED when libvirt fails midway, virsh's error only in the cause", async () => {
    const { driver } = driverWith(
      [
        fixture("qemu-domstate-web-01-running"),
        fixture("qemu-migrate-live-failed"),
        fixture("qemu-domjobinfo-migrating"),
        fixture("qemu-domjobinfo-migrating"),
      ],
      { uri: QEMU },
    );
    const err = await driver.migrate("web-01", DEST, { live: true, signal: live() }).then(
      () => assert.fail("migrated"),
      (e: unknown) => e as RpcError,
    );
    assert.equal(err.reason, "BACKEND_FAILED");
    assert.equal(err.clientMessage, REASONS.BACKEND_FAILED.message);
    assert.match(String((err.cause as Error).message), /migration out job: unexpectedly failed/);
  });

  it("on abort interrupts virsh with SIGINT and runs domjobabort, then rejects CANCELLED", async () => {
    const ac = new AbortController();
    const { driver, replay } = driverWith(
      [
        fixture("qemu-domstate-web-01-running"),
        {
          reply: fixture("qemu-migrate-live-progress"),
          whenKilled: fixture("qemu-migrate-live-aborted"),
        },
        fixture("qemu-domjobinfo-migrating"),
        fixture("qemu-domjobabort"),
      ],
      { uri: QEMU },
    );
    await assert.rejects(
      driver.migrate("web-01", DEST, {
        live: true,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.percent >= 12) ac.abort();
        },
      }),
      isReason("CANCELLED"),
    );
    assert.equal(replay.calls[1]?.killedWith, "SIGINT");
    assert.deepEqual(replay.calls.at(-1)?.args, ["-c", QEMU, "domjobabort", "--domain", "web-01"]);
    assert.equal(replay.remaining(), 0);
  });

  it("resolves when the abort came after libvirt had finished: the domain did move", async () => {
    const ac = new AbortController();
    const { driver } = driverWith(
      [
        fixture("qemu-domstate-web-01-running"),
        {
          reply: fixture("qemu-migrate-live-progress"),
          whenKilled: fixture("qemu-migrate-live-progress"),
        },
        fixture("qemu-domjobinfo-migrating"),
        fixture("qemu-domjobabort-no-job"),
      ],
      { uri: QEMU },
    );
    const phases: string[] = [];
    await driver.migrate("web-01", DEST, {
      live: true,
      signal: ac.signal,
      onProgress: (p) => {
        phases.push(p.phase);
        if (p.percent >= 12) ac.abort();
      },
    });
    assert.equal(phases.at(-1), "completed");
  });

  it("abortJob (settling an orphan's job) runs domjobabort on the domain; no job is not an error", async () => {
    const { driver, replay } = driverWith(
      [fixture("qemu-domjobabort"), fixture("qemu-domjobabort-no-job")],
      { uri: QEMU },
    );
    await driver.abortJob("web-01", live());
    await driver.abortJob("web-01", live());
    assert.deepEqual(replay.calls[0]?.args, ["-c", QEMU, "domjobabort", "--domain", "web-01"]);
    assert.equal(replay.remaining(), 0);
    await assert.rejects(driver.abortJob("bad name;", live()), isReason("INVALID_ARGUMENT"));
  });

  it("aborts the job and rejects BACKEND_TIMEOUT past migrateTimeoutMs", async () => {
    const { driver, replay } = driverWith(
      [
        fixture("qemu-domstate-web-01-running"),
        { reply: fixture("qemu-migrate-live-progress"), hang: true },
        fixture("qemu-domjobabort"),
      ],
      { uri: QEMU, migrateTimeoutMs: 30 },
    );
    await assert.rejects(
      driver.migrate("web-01", DEST, { live: true, signal: live() }),
      isReason("BACKEND_TIMEOUT"),
    );
    assert.equal(replay.calls[1]?.killedBy, "timeout");
    assert.equal(replay.calls[1]?.killedWith, "SIGINT");
    assert.deepEqual(replay.calls[2]?.args, ["-c", QEMU, "domjobabort", "--domain", "web-01"]);
  });

  it("refuses live migration on a backend that cannot, after checking the domain exists", async () => {
    const { driver, replay } = driverWith([fixture("node-domstate-web-01")]);
    await assert.rejects(
      driver.migrate("web-01", DEST, { live: true, signal: live() }),
      isReason("MIGRATION_NOT_ALLOWED"),
    );
    assert.equal(replay.remaining(), 0);
  });
});

describe("libvirt driver: the real runner", () => {
  it("maps a virsh that is not installed to BACKEND_UNAVAILABLE", async () => {
    const driver = createLibvirtDriver({ nodeId: "hv01", uri: QEMU, virsh: "/nonexistent/virsh" });
    await assert.rejects(driver.list(live()), isReason("BACKEND_UNAVAILABLE"));
  });
});
