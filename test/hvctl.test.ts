import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createSecureServer, type Http2SecureServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { createCertificateAuthority, loadCertificateAuthority } from "../src/pki/index.js";
import {
  type DaemonProcess,
  HVCTL_BIN,
  runProcess,
  startDevDaemon,
} from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";
import { runHvctlInProcess } from "./helpers/hvctl-in-process.js";

/**
 * hvctl against one dev-mode daemon shared by every test in this file. Runs
 * that name their configuration file are in-process (output and exit codes
 * are what they test); the built binary runs as a child process where the
 * process is the point: signals, and finding the file through HOME.
 */
describe("hvctl against a dev daemon", () => {
  let dir: string;
  let home: string;
  let daemon: DaemonProcess;
  let config: string;
  /** A second configuration file the config tests write. */
  let mine: string;

  /** No DEBVISOR_* settings from the environment the tests run in, and a HOME of their own. */
  const cleanEnv = () => ({
    HOME: home,
    DEBVISOR_CONFIG: "",
    DEBVISOR_CONTEXT: "",
    DEBVISOR_SERVER: "",
    DEBVISOR_TOKEN: "",
    NO_COLOR: "",
  });
  /**
   * Runs hvctl with a clean environment (only what the test sets): in-process
   * when `--config` is given, else as the built binary (its default file is
   * found through HOME, which only a child process can be given).
   */
  const hvctl = (args: string[], env: Record<string, string> = {}) =>
    args.includes("--config")
      ? runHvctlInProcess(args, { ...process.env, ...cleanEnv(), ...env })
      : runProcess(process.execPath, [HVCTL_BIN, ...args], { env: { ...cleanEnv(), ...env } });
  /** hvctl with the dev cluster's configuration (context dev: the admin's client certificate). */
  const dev = (...args: string[]) => hvctl(["--config", config, ...args]);
  const ok = async (...args: string[]) => {
    const r = await dev(...args);
    assert.equal(r.code, 0, `hvctl ${args.join(" ")}: ${r.stderr}`);
    return r;
  };
  const json = async <T = Record<string, unknown>>(...args: string[]) =>
    JSON.parse((await ok("-o", "json", ...args)).stdout) as T;
  /**
   * `hvctl config set-context NAME` for the dev operator's API key, trusting
   * the dev CA and pointing at the daemon unless `flags` say otherwise
   * (later flags win). `where` is how hvctl finds the file.
   */
  const apiKeyContext = (
    name: string,
    flags: string[] = [],
    where: { args?: string[]; env?: Record<string, string> } = { args: ["--config", config] },
  ) =>
    hvctl(
      [
        ...(where.args ?? []),
        "config",
        "set-context",
        name,
        "--server",
        daemon.grpcAddress,
        "--ca",
        join(dir, "pki", "ca.crt"),
        "--api-key-file",
        join(dir, "pki", "operator.apikey"),
        ...flags,
      ],
      where.env,
    );
  const REQUEST = /\(([A-Z_]+), request [0-9a-f-]{36}\)$/;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-hvctl-"));
    home = mkdtempSync(join(tmpdir(), "dv-hvctl-home-"));
    // carol's certificate renews right after it is issued.
    daemon = await startDevDaemon(dir, { pki: { minRenewalAgeSeconds: 0 } });
    config = join(dir, "hvctl.yaml");
    mine = join(home, "elsewhere", "hvctl.yaml");
  });
  after(() => daemon?.kill());

  describe("nodes and VMs", () => {
    it("lists nodes as a table, -o wide with more columns, and as JSON and YAML", async () => {
      const table = (await ok("node", "list")).stdout;
      assert.match(
        table,
        /^ID\s+HOSTNAME\s+IP\s+ZONE\s+RACK\s+STATUS\s+LAST SEEN\s+VMS\s+CPU LOAD\n/,
      );
      assert.match(
        table,
        /^node-01\s+hv01\S*\s+\S+\s+zone-a\s+r1\s+Ready\s+\d+s ago\s+\d+\s+[\d.]+$/m,
      );
      assert.ok(!table.includes("\x1b"), "no colour when stdout is not a terminal");
      const wide = (await ok("node", "list", "-o", "wide")).stdout;
      assert.match(wide, /\sCPU LOAD\s+MEM\s+DISK\s+CORES\s+MEMORY\s+VERSION\s+LABELS\n/);
      assert.match(wide, /^node-01\s.*\s\d+ GiB\s/m);
      const j = await json<{
        nodes: { info: { id: { id: string }; zone: string }; readiness: string }[];
      }>("node", "list", "--zone", "zone-a");
      assert.ok(j.nodes.length >= 2);
      assert.ok(j.nodes.every((n) => n.info.zone === "zone-a"));
      assert.equal(j.nodes[0]?.readiness, "NODE_READINESS_READY");
      const y = parseYaml((await ok("node", "list", "-o", "yaml")).stdout) as {
        nodes: { info: { id: { id: string } }; lastHeartbeat: string }[];
      };
      assert.deepEqual(y.nodes.map((n) => n.info.id.id).slice(0, 3), [
        "node-01",
        "node-02",
        "node-03",
      ]);
      assert.match(y.nodes[0]?.lastHeartbeat ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    });

    it("takes the global flags after the noun as well as before it", async () => {
      const r = await hvctl(["node", "list", "-o", "json", "--config", config, "--context", "dev"]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok((JSON.parse(r.stdout) as { nodes: unknown[] }).nodes.length >= 3);
    });

    it("shows one node with its VMs", async () => {
      const table = (await ok("node", "get", "node-01")).stdout;
      assert.match(table, /^id:\s+node-01$/m);
      assert.match(table, /^status:\s+Ready$/m);
      // Measured on arrival and shown; the simulated nodes share the server's clock.
      assert.match(table, /^report clock skew:\s+-?\d+ ms$/m);
      assert.match(table, /^capacity:\s+\d+ cores, [\d.]+ GiB memory/m);
      assert.match(table, /^ID\s+NAME\s+TENANT\s+STATE\s+NODE\s+VCPUS\s+MEMORY$/m);
      const d = await json<{ summary: { info: { id: { id: string } } }; vms: { id: string }[] }>(
        "node",
        "get",
        "node-01",
      );
      assert.equal(d.summary.info.id.id, "node-01");
      assert.ok(d.vms.length > 0);
    });

    it("stops quietly with 0 when the reader of a pipe goes away (| head)", () => {
      // A real shell pipe. head -n 0 leaves before hvctl writes, so the write
      // always meets a closed pipe; head -1 is the everyday case.
      for (const head of ["head -n 0", "head -1"]) {
        const r = spawnSync(
          "bash",
          [
            "-c",
            `set -o pipefail; "$@" | ${head}`,
            "bash",
            process.execPath,
            HVCTL_BIN,
            "--config",
            config,
            "node",
            "list",
          ],
          { encoding: "utf8", env: { ...process.env, ...cleanEnv() }, timeout: 30_000 },
        );
        assert.equal(r.status, 0, `${head}: ${r.stderr}`);
        assert.equal(r.stderr, "", `${head}: nothing on stderr`);
        if (head === "head -1") assert.match(r.stdout, /^ID\s+HOSTNAME/);
      }
    });

    it("registers a node, takes its heartbeat, and refuses it to another identity", async () => {
      const reg = await ok(
        "node",
        "register",
        "hv-cli",
        "--hostname",
        "hv-cli.example",
        "--ip",
        "10.0.0.70",
        "--zone",
        "zone-c",
        "--label",
        "gpu=a100",
        "--cpu-cores",
        "64",
        "--memory",
        "512GiB",
      );
      assert.equal(reg.stdout, "node hv-cli registered\n");
      const before = await json<{
        summary: { readiness: string; info: { capacity: { memoryBytes: string } } };
      }>("node", "get", "hv-cli");
      assert.equal(before.summary.readiness, "NODE_READINESS_NOT_READY", "no heartbeat yet");
      assert.equal(before.summary.info.capacity.memoryBytes, String(512 * 1024 ** 3));
      await ok("node", "heartbeat", "hv-cli", "--cpu-load", "0.5", "--mem-used-pct", "20");
      const listed = (await ok("node", "list", "-l", "gpu=a100")).stdout;
      assert.match(listed, /^hv-cli\s.*\sReady\s/m);
      const taken = await dev(
        "--context",
        "dev-operator",
        "node",
        "register",
        "hv-cli",
        "--hostname",
        "x",
        "--ip",
        "10.0.0.71",
      );
      assert.equal(taken.code, 1, "ALREADY_EXISTS is in the 'other' class");
      assert.match(
        taken.stderr,
        /^hvctl: node id is registered to another identity: pick another id/,
      );
      assert.match(taken.stderr.trim(), /\(ALREADY_EXISTS, request [0-9a-f-]{36}\)$/);
    });

    it("lists datasets by the names every storage command takes back", async () => {
      const table = (await ok("dataset", "list")).stdout;
      assert.match(table, /^NAME\s+NODE\s+TENANT\s+VM\s+SIZE\s+SNAPSHOTS\s+REPLICATION$/m);
      const names = table
        .split("\n")
        .slice(1)
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[0] ?? "");
      assert.ok(names.includes("zfs:tank/vm-002-disk0") && names.includes("rbd:rbd/vm-001-disk0"));
      for (const name of names) await ok("snapshot", "list", name);
      assert.match(
        table,
        /^zfs:tank\/vm-002-disk0\s+node-01\s+acme\s+vm-002\s+[\d.]+ GiB\s+\d+\s+node-01 -> node-02 /m,
      );
      // vm get prints a VM's disks the same way.
      assert.match((await ok("vm", "get", "vm-001")).stdout, /^disks:\s+rbd:rbd\/vm-001-disk0$/m);
      const zfsOnly = await json<{ datasets: { dataset: { backend: string } }[] }>(
        "dataset",
        "list",
        "--backend",
        "zfs",
      );
      assert.ok(zfsOnly.datasets.length > 0);
      assert.ok(zfsOnly.datasets.every((d) => d.dataset.backend === "BACKEND_ZFS"));
    });

    it("lists and shows VMs", async () => {
      const j = await json<{ vms: { id: string; nodeId: { id: string }; state: string }[] }>(
        "vm",
        "list",
        "--node",
        "node-02",
      );
      assert.ok(j.vms.length > 0);
      assert.ok(j.vms.every((v) => v.nodeId.id === "node-02"));
      const id = j.vms[0]?.id ?? "";
      const y = parseYaml((await ok("vm", "get", id, "-o", "yaml")).stdout) as {
        id: string;
        memoryBytes: string;
      };
      assert.equal(y.id, id);
      assert.match(y.memoryBytes, /^\d+$/);
      const table = (await ok("vm", "get", id)).stdout;
      assert.match(table, new RegExp(`^id:\\s+${id}$`, "m"));
      assert.match(table, /^memory:\s+[\d.]+ (MiB|GiB)$/m);
      assert.match(
        (await ok("vm", "list", "-o", "wide")).stdout,
        /^ID\s+NAME\s+TENANT\s+STATE\s+NODE\s+VCPUS\s+MEMORY\s+HA\s+LIVE MIGRATION\s+CPU MODEL\s+DISKS\s+LABELS$/m,
      );
    });
  });

  describe("access", () => {
    it("answers whoami and can-i, and says which permission --as needs", async () => {
      const me = parseYaml((await ok("auth", "whoami", "-o", "yaml")).stdout) as {
        principal: string;
        authMethod: string;
      };
      assert.deepEqual([me.principal, me.authMethod], ["admin", "mtls"]);
      const yes = await json<{ allowed: boolean; reason: string }>("auth", "can-i", "node:list");
      assert.equal(yes.allowed, true);
      const no = await dev("--context", "dev-operator", "auth", "can-i", "pki:cert:issue");
      assert.equal(no.code, 1);
      assert.match(no.stdout, /^no \(/);
      const as = await dev(
        "--context",
        "dev-operator",
        "auth",
        "can-i",
        "node:list",
        "--as",
        "admin",
      );
      assert.equal(as.code, 4);
      assert.match(
        as.stderr.trim(),
        /^hvctl: permission denied: you need auth:check:any \(PERMISSION_DENIED, request /,
      );
      const asAdmin = await dev(
        "-o",
        "json",
        "auth",
        "can-i",
        "auth:role:set",
        "--as",
        "dev-operator",
      );
      assert.equal(asAdmin.code, 1, "no");
      assert.equal((JSON.parse(asAdmin.stdout) as { allowed: boolean }).allowed, false);
    });

    it("creates, lists, rotates and revokes API keys with stable JSON", async () => {
      const created = await json<{
        token: string;
        key: { id: string; principal: string; roles: string[]; expires: string };
      }>("apikey", "create", "--roles", "viewer", "--principal", "hvctl-test", "--ttl", "1d");
      assert.match(created.token, /^dvk_[0-9a-f]{16}_/);
      assert.deepEqual(created.key.roles, ["viewer"]);
      assert.match(created.key.expires, /Z$/);
      const tableCreate = await ok(
        "apikey",
        "create",
        "--roles",
        "viewer",
        "--principal",
        "hvctl-test",
      );
      assert.match(tableCreate.stdout, /^dvk_\S+\n$/, "the token alone on stdout");
      assert.match(tableCreate.stderr, /shown once/);
      // Both streams into one, as on a terminal: the note about the token comes after it.
      const together = spawnSync(
        "sh",
        [
          "-c",
          '"$@" 2>&1',
          "sh",
          process.execPath,
          HVCTL_BIN,
          "--config",
          config,
          "apikey",
          "create",
          "--roles",
          "viewer",
          "--principal",
          "hvctl-test-together",
        ],
        { encoding: "utf8", env: { ...process.env, ...cleanEnv() }, timeout: 30_000 },
      );
      assert.match(together.stdout, /^dvk_\S+\n.*The token above is shown once/s);
      const keys = await json<{ keys: { id: string }[] }>(
        "apikey",
        "list",
        "--principal",
        "hvctl-test",
      );
      assert.equal(keys.keys.length, 2);
      const rotated = await json<{ key: { id: string } }>(
        "apikey",
        "rotate",
        created.key.id,
        "--grace",
        "1h",
      );
      const revoked = await json<{ id: string; revoked: string }>(
        "apikey",
        "revoke",
        rotated.key.id,
      );
      assert.equal(revoked.id, rotated.key.id);
      assert.match(revoked.revoked, /Z$/);
      const wide = (await ok("apikey", "list", "--principal", "hvctl-test", "-o", "wide")).stdout;
      assert.match(wide, /\sCREATED BY\s/);
      assert.match(wide, new RegExp(`^${created.key.id}\\s.*rotated to ${rotated.key.id}`, "m"));
    });

    it("sets, lists and deletes roles and bindings", async () => {
      const role = await json<{ name: string; grants: string[] }>(
        "role",
        "set",
        "hvctl-reader",
        "--grants",
        "node:list,vm:list",
      );
      assert.deepEqual(role.grants, ["node:list", "vm:list"]);
      assert.match(
        (await ok("role", "list")).stdout,
        /^hvctl-reader\s+custom\s+node:list,vm:list$/m,
      );
      const b = await json<{ principal: string; roles: string[] }>(
        "binding",
        "set",
        "hvctl-bob",
        "--roles",
        "hvctl-reader",
      );
      assert.deepEqual(b.roles, ["hvctl-reader"]);
      const bindings = await json<{ bindings: { principal: string; source: string }[] }>(
        "binding",
        "list",
      );
      assert.ok(bindings.bindings.some((x) => x.principal === "hvctl-bob" && x.source === "store"));
      await ok("binding", "delete", "hvctl-bob");
      await ok("role", "delete", "hvctl-reader");
      assert.doesNotMatch((await ok("role", "list")).stdout, /hvctl-reader/);
      const builtIn = await dev("role", "set", "admin", "--grants", "node:list");
      assert.equal(builtIn.code, 1);
      assert.match(
        builtIn.stderr,
        /built-in and config-file roles cannot be changed here: define a new role instead \(FAILED_PRECONDITION, request /,
      );
    });
  });

  describe("PKI", () => {
    it("creates an enrollment token whose fingerprint is the CA's", async () => {
      const t = await json<{ token: string; node: string; expires: string; caFingerprint: string }>(
        "token",
        "create",
        "hv-token",
        "--ttl",
        "15m",
      );
      assert.match(t.token, /^dvt_/);
      assert.equal(t.node, "hv-token");
      const ca = await json<{ fingerprint: string; pem: string }>("ca", "show");
      assert.equal(t.caFingerprint, ca.fingerprint);
      const der = new X509Certificate(ca.pem).raw;
      assert.equal(ca.fingerprint, `sha256:${createHash("sha256").update(der).digest("hex")}`);
      const table = await ok("token", "create", "hv-token2");
      assert.match(table.stdout, /^dvt_\S+\n$/);
      assert.match(
        table.stderr,
        new RegExp(`--server ${daemon.grpcAddress.replace(/\./g, "\\.")} --ca-fingerprint sha256:`),
      );
    });

    it("fetches the CA pinned by fingerprint, and refuses another fingerprint", async () => {
      const { fingerprint } = await json<{ fingerprint: string }>("ca", "show");
      const out = join(home, "fetched-ca.pem");
      await ok(
        "--server",
        daemon.grpcAddress,
        "ca",
        "fetch",
        "--fingerprint",
        fingerprint,
        "--out",
        out,
      );
      assert.equal(
        new X509Certificate(readFileSync(out)).fingerprint256,
        new X509Certificate(readFileSync(join(dir, "pki", "ca.crt"))).fingerprint256,
      );
      const wrong = await dev("ca", "fetch", "--fingerprint", `sha256:${"ab".repeat(32)}`);
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /no certificate in its chain has the pinned fingerprint/);
    });

    it("issues a client certificate, renews it through its own context, then revokes it", async () => {
      const out = join(home, "carol");
      const issued = await json<{ serial: string }>(
        "cert",
        "issue",
        "--cn",
        "carol",
        "--client",
        "--out",
        out,
      );
      assert.equal(statSync(join(out, "carol.key")).mode & 0o777, 0o600);
      await ok(
        "config",
        "set-context",
        "carol",
        "--server",
        daemon.grpcAddress,
        "--ca",
        join(out, "ca.crt"),
        "--client-cert",
        join(out, "carol.crt"),
        "--client-key",
        join(out, "carol.key"),
      );
      const renewed = await json<{ serial: string }>("--context", "carol", "cert", "renew");
      assert.notEqual(renewed.serial, issued.serial);
      assert.equal(
        new X509Certificate(readFileSync(join(out, "carol.crt"))).serialNumber,
        renewed.serial,
      );
      const me = await json<{ principal: string }>("--context", "carol", "auth", "whoami");
      assert.equal(me.principal, "carol", "the renewed certificate works");
      const list = (await ok("cert", "list", "--subject", "carol")).stdout;
      assert.match(
        list,
        new RegExp(`^${issued.serial}\\s+carol\\s+client\\s.*superseded by ${renewed.serial}`, "m"),
      );
      const revokedClient = await ok("cert", "revoke", renewed.serial, "--reason", "left");
      assert.doesNotMatch(revokedClient.stdout, /note:/);
      const after = await eventually(async () => {
        const r = await dev("--context", "carol", "auth", "whoami");
        return r.code !== 0 && r;
      }).catch(() => ({ code: 0, stdout: "", stderr: "" }));
      assert.equal(after.code, 3, "a revoked certificate is unauthenticated");
      assert.match(
        after.stderr.trim(),
        /^hvctl: authentication required: the server did not accept the client certificate of context "carol" \(revoked, or from another CA\) \(UNAUTHENTICATED, request /,
      );
      // A server certificate's revocation is not checked by clients: hvctl says so.
      const server = await json<{ serial: string }>(
        "cert",
        "issue",
        "--cn",
        "panel",
        "--usage",
        "server",
        "--san",
        "panel.example",
        "--out",
        join(out, "panel"),
      );
      const revokedServer = await ok("cert", "revoke", server.serial);
      assert.match(
        revokedServer.stdout,
        /note: a server certificate: .* this hvctl refuses it from now on; each other hvctl once it has taken the cluster's list of revoked server certificates again/,
      );
      const apiKeyContext = await dev("--context", "dev-operator", "cert", "renew");
      assert.equal(apiKeyContext.code, 2);
      assert.match(apiKeyContext.stderr, /does not authenticate with a client certificate/);
    });
  });

  describe("audit", () => {
    it("finds calls by method and streams JSON Lines", async () => {
      await ok("vm", "list");
      const lines = (await ok("-o", "json", "audit", "search", "--method", "ListVms")).stdout
        .trim()
        .split("\n");
      const rec = JSON.parse(lines.at(-1) ?? "{}") as {
        principal: string;
        method: string;
        requestId: string;
      };
      assert.equal(rec.method, "ListVms");
      assert.equal(rec.principal, "admin");
      assert.match(rec.requestId, /^[0-9a-f-]{36}$/);
      const tail = (await ok("audit", "tail", "-n", "3")).stdout.trim().split("\n");
      assert.equal(tail.length, 4, "a header and three records");
      const bad = await dev("audit", "tail", "-n", "many");
      assert.equal(bad.code, 2);
    });

    it("follows new records with tail -f until Ctrl-C, which stops watching cleanly", async () => {
      const proc = spawn(
        process.execPath,
        [HVCTL_BIN, "--config", config, "audit", "tail", "-f", "-n", "0", "--method", "GetVm"],
        { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...cleanEnv() } },
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
        const vm = (await json<{ vms: { id: string }[] }>("vm", "list")).vms[0]?.id ?? "";
        // The tail is a child process: its start (node, TLS, the watch) took more
        // than 10 s once in CI, with the chaos test's processes on the same 2 cores.
        await eventually(
          async () => {
            await ok("vm", "get", vm);
            assert.ok(out.includes(" GetVm "), "the tail shows the GetVm call");
          },
          { timeoutMs: 30_000, intervalMs: 200 },
        );
        assert.match(out, /^TIME\s+SEQ\s+PRINCIPAL\s+METHOD.*\n.*\sadmin\s+GetVm\s+allow\s+OK\s/);
        proc.kill("SIGINT");
        assert.equal(await exited, 0);
        assert.equal(err, "stopped watching\n");
      } finally {
        proc.kill("SIGKILL");
      }
    });
  });

  describe("Ctrl-C", () => {
    /**
     * Starts the built hvctl with `args`, waits until its output matches
     * `ready` (the watch is open), sends SIGINT as a terminal's Ctrl-C does,
     * and resolves with how the process ended and what it wrote on stderr.
     */
    const interrupted = async (args: string[], ready: RegExp) => {
      const proc = spawn(process.execPath, [HVCTL_BIN, "--config", config, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, ...cleanEnv() },
      });
      let out = "";
      let err = "";
      proc.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      proc.stderr.on("data", (d: Buffer) => {
        err += d.toString();
      });
      const exited = new Promise<{ code: number | null; signal: string | null }>((r) =>
        proc.once("exit", (code, signal) => r({ code, signal })),
      );
      try {
        // A child process on 2 shared cores: its start (node, TLS, the watch) may take a while.
        await eventually(() => assert.match(out + err, ready), {
          timeoutMs: 30_000,
          intervalMs: 100,
        });
        proc.kill("SIGINT");
        return { ...(await exited), err };
      } finally {
        proc.kill("SIGKILL");
      }
    };

    it("ends node list --watch, events --watch and replication watch alike: exit 0, stopped watching", async () => {
      // An idle job not due for a while (the scheduler runs the dev jobs soon after start):
      // its watch waits for the next run.
      const idle = await eventually(
        async () => {
          const { jobs } = await json<{
            jobs: { jobId: string; status: { state: string; nextRun?: string } }[];
          }>("replication", "list");
          return (
            jobs.find(
              (j) =>
                j.status.state !== "REPL_STATE_RUNNING" &&
                Date.parse(j.status.nextRun ?? "") > Date.now() + 120_000,
            ) ?? false
          );
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      const ends = await Promise.all([
        interrupted(["node", "list", "--watch"], /^EVENT\s+ID\s/m),
        interrupted(["events", "--watch", "--limit", "1"], /\S/),
        interrupted(["replication", "watch", idle.jobId], /waiting for its next run/),
      ]);
      for (const [i, end] of ends.entries()) {
        assert.deepEqual(
          { code: end.code, signal: end.signal },
          { code: 0, signal: null },
          `${i}: ${end.err}`,
        );
        assert.match(end.err, /^stopped watching/m);
        assert.doesNotMatch(end.err, /Error|at /, "no stack trace");
      }
    });
  });

  describe("errors: one line, the code, the request id, and an exit code per class", () => {
    it("usage: 2 for unknown flags, bad values, and arguments the server rejects", async () => {
      const unknown = await dev("node", "list", "--bogus");
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /unknown option '--bogus'/);
      assert.equal((await dev("node", "list", "--readiness", "maybe")).code, 2);
      assert.equal((await dev("apikey", "create", "--roles", "viewer", "--ttl", "soon")).code, 2);
      for (const args of [
        ["audit", "search", "--limit", "1e3"],
        ["audit", "tail", "--lines", "0x10"],
      ])
        assert.equal((await dev(...args)).code, 2, args.join(" "));
      for (const cores of ["", "1e3", "0x10", "-1"]) {
        const r = await dev(
          "node",
          "register",
          "hv09",
          "--hostname",
          "hv09",
          "--ip",
          "10.0.0.9",
          "--cpu-cores",
          cores,
        );
        assert.equal(r.code, 2, `--cpu-cores "${cores}": ${r.stderr}`);
      }
      // Contradictory flags: refused, nothing started (not a silent choice of one).
      const both = await dev("migration", "run", "--vm", "vm-001", "--detach", "--no-progress");
      assert.equal(both.code, 2, both.stderr);
      assert.match(both.stderr, /--detach and --no-progress/);
      assert.equal(both.stdout, "", "no MigrateVM or StartMigration call answered");
      const invalid = await dev("node", "get", "Not_An_Id!");
      assert.equal(invalid.code, 2);
      assert.match(
        invalid.stderr.trim(),
        /^hvctl: .*id.* \(INVALID_ARGUMENT, request [0-9a-f-]{36}\)$/,
      );
      assert.equal((await dev("node")).code, 2, "a noun without a verb shows help and fails");
      assert.equal((await dev("--help")).code, 0);
    });

    it("unauthenticated: 3, naming where the token came from", async () => {
      const r = await hvctl(["--config", config, "--context", "dev-operator", "node", "list"], {
        DEBVISOR_TOKEN: `dvk_${"0".repeat(16)}_${"x".repeat(43)}`,
      });
      assert.equal(r.code, 3);
      assert.match(
        r.stderr.trim(),
        /^hvctl: authentication required: the server did not accept the token from \$DEBVISOR_TOKEN/,
      );
      assert.match(r.stderr.trim(), REQUEST);
    });

    it("never prints a token it cannot send: a stray character is a usage error that quotes none of it", async () => {
      const token = readFileSync(join(dir, "pki", "operator.apikey"), "utf8").trim();
      const secret = token.slice(-43);
      // Pasted with a non-breaking space, two lines in a file, a control character.
      const badFile = join(home, "two-lines.key");
      writeFileSync(badFile, `${token}\n# the operator's key\n`);
      writeFileSync(join(dir, "pki", "bad.apikey"), `${token}\u0001`);
      const badContext = join(dir, "bad-context.yaml");
      writeFileSync(
        badContext,
        readFileSync(config, "utf8").replace("pki/operator.apikey", "pki/bad.apikey"),
      );
      const runs = {
        env: await hvctl(["--config", config, "node", "list"], {
          DEBVISOR_TOKEN: `${token}\u00a0`,
        }),
        file: await hvctl(["--config", config, "--token-file", badFile, "node", "list"]),
        context: await hvctl(["--config", badContext, "--context", "dev-operator", "node", "list"]),
      };
      for (const [from, r] of Object.entries(runs)) {
        assert.equal(r.code, 2, `${from}: ${r.stderr}`);
        assert.ok(
          !`${r.stdout}${r.stderr}`.includes(secret),
          `${from} printed the token: ${r.stderr}`,
        );
        assert.match(r.stderr, /which a token cannot hold \(the token is not shown\)/, from);
      }
      assert.match(
        runs.env.stderr,
        /^hvctl: \$DEBVISOR_TOKEN: the token holds U\+00A0 at character/,
      );
    });

    it("permission denied: 4, with the permission needed", async () => {
      const r = await dev("--context", "dev-operator", "token", "create", "hv-x");
      assert.equal(r.code, 4);
      assert.match(
        r.stderr,
        /^hvctl: permission denied: you need pki:token:create \(PERMISSION_DENIED, request [0-9a-f-]{36}\)\n$/,
      );
    });

    it("not found: 5", async () => {
      const r = await dev("vm", "get", "no-such-vm");
      assert.equal(r.code, 5);
      assert.match(
        r.stderr,
        /^hvctl: vm not found: hvctl vm list shows the VMs you may see \(NOT_FOUND, request [0-9a-f-]{36}\)\n$/,
      );
    });

    it("unavailable: 6, naming the likely cause of each connection failure", async () => {
      const refused = await dev("--server", "127.0.0.1:1", "node", "list");
      assert.equal(refused.code, 6);
      assert.match(
        refused.stderr,
        /^hvctl: cannot connect to 127\.0\.0\.1:1: nothing is listening there; .* \(UNAVAILABLE\)\n$/,
      );
      const plain = await dev("--server", daemon.httpAddress, "node", "list");
      assert.equal(plain.code, 6);
      assert.match(plain.stderr, /the server does not speak TLS there/);
      assert.equal(
        (await apiKeyContext("other-name", ["--tls-server-name", "other.example"])).code,
        0,
      );
      const otherName = await dev("--context", "other-name", "node", "list");
      assert.equal(otherName.code, 6);
      assert.match(
        otherName.stderr,
        /the server's certificate is for another name \(DNS:localhost, IP Address:127\.0\.0\.1/,
      );
      const foreign = await createCertificateAuthority({ commonName: "Someone Else's CA" });
      writeFileSync(join(home, "foreign-ca.pem"), foreign.certPem);
      assert.equal(
        (await apiKeyContext("foreign", ["--ca", join(home, "foreign-ca.pem")])).code,
        0,
      );
      const unknownCa = await dev("--context", "foreign", "node", "list");
      assert.equal(unknownCa.code, 6);
      assert.match(
        unknownCa.stderr,
        /the server's certificate is not signed by the context's CA \(unknown CA\)/,
      );
    });

    it("names an expired server certificate", async () => {
      const ca = await createCertificateAuthority({ commonName: "Expired Test CA" });
      const cert = await (await loadCertificateAuthority(ca)).issue({
        commonName: "localhost",
        usage: "server",
        altNames: ["localhost", "127.0.0.1"],
        validityDays: 1,
        now: new Date(Date.now() - 10 * 86_400_000),
      });
      const server: Http2SecureServer = createSecureServer({
        cert: cert.certPem,
        key: cert.keyPem,
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      try {
        writeFileSync(join(home, "expired-ca.pem"), ca.certPem);
        const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
        const set = await apiKeyContext("expired", [
          "--server",
          address,
          "--ca",
          join(home, "expired-ca.pem"),
        ]);
        assert.match(set.stdout, /^context "expired" created/);
        const r = await dev("--context", "expired", "node", "list");
        assert.equal(r.code, 6);
        assert.match(
          r.stderr,
          /^hvctl: TLS to 127\.0\.0\.1:\d+ failed: the server's certificate has expired; /,
        );
      } finally {
        server.close();
      }
    });

    it("--insecure-skip-tls-verify connects despite an unknown CA, and warns every time", async () => {
      for (let i = 0; i < 2; i++) {
        const r = await dev("--context", "foreign", "--insecure-skip-tls-verify", "node", "list");
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^node-01\s/m);
        assert.match(
          r.stderr,
          /^warning: --insecure-skip-tls-verify: the server's certificate is not checked/,
        );
      }
    });
  });

  describe("contexts", () => {
    it("set-context creates the file 0600 with absolute paths; use-context and current-context switch", async () => {
      const none = await hvctl(["--config", join(home, "nope.yaml"), "config", "get-contexts"]);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /file not found; create a context with: hvctl config set-context/);
      const setContext = (name: string) =>
        apiKeyContext(name, ["--tls-server-name", "localhost"], { env: { DEBVISOR_CONFIG: mine } });
      const created = await setContext("ops");
      assert.equal(created.code, 0, created.stderr);
      assert.equal(created.stdout, `context "ops" created in ${mine}\n`);
      assert.equal(statSync(mine).mode & 0o777, 0o600);
      assert.equal(statSync(join(home, "elsewhere")).mode & 0o777, 0o700);
      assert.equal((await setContext("ops2")).code, 0);
      const file = parseYaml(readFileSync(mine, "utf8")) as {
        currentContext: string;
        contexts: { name: string; ca?: string }[];
      };
      assert.equal(file.currentContext, "ops", "the first context written became current");
      assert.equal(file.contexts.find((c) => c.name === "ops2")?.ca, join(dir, "pki", "ca.crt"));
      const switched = await hvctl(["--config", mine, "config", "use-context", "ops2"]);
      assert.equal(switched.stdout, 'switched to context "ops2"\n');
      assert.equal((await hvctl(["--config", mine, "config", "current-context"])).stdout, "ops2\n");
      assert.equal(statSync(mine).mode & 0o777, 0o600, "still 0600 after a rewrite");
      const me = await hvctl(["--config", mine, "-o", "json", "auth", "whoami"]);
      assert.equal((JSON.parse(me.stdout) as { principal: string }).principal, "dev-operator");
      const contexts = JSON.parse(
        (await hvctl(["--config", mine, "-o", "json", "config", "get-contexts"])).stdout,
      ) as {
        currentContext: string;
        contexts: { name: string; current: boolean; credential: string }[];
      };
      assert.equal(contexts.currentContext, "ops2");
      assert.deepEqual(
        contexts.contexts.map((c) => [c.name, c.current, c.credential]),
        [
          ["ops", false, "api-key"],
          ["ops2", true, "api-key"],
        ],
      );
      const missing = await hvctl(["--config", mine, "config", "use-context", "nope"]);
      assert.equal(missing.code, 2);
      const bad = await hvctl([
        "--config",
        mine,
        "config",
        "set-context",
        "ops",
        "--server",
        "no-port",
      ]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /server: must be HOST:PORT/);
      assert.equal(
        (parseYaml(readFileSync(mine, "utf8")) as { contexts: { server: string }[] }).contexts[0]
          ?.server,
        daemon.grpcAddress,
        "a refused change leaves the file as it was",
      );
    });

    it("takes DEBVISOR_CONTEXT, DEBVISOR_SERVER and DEBVISOR_TOKEN over the file, and flags over those", async () => {
      const who = async (args: string[], env: Record<string, string>) => {
        const r = await hvctl(["--config", config, "-o", "json", ...args, "auth", "whoami"], env);
        return r.code === 0
          ? (JSON.parse(r.stdout) as { principal: string }).principal
          : `exit ${r.code}`;
      };
      assert.equal(await who([], {}), "admin", "the file's current context");
      assert.equal(await who([], { DEBVISOR_CONTEXT: "dev-operator" }), "dev-operator");
      assert.equal(await who(["--context", "dev"], { DEBVISOR_CONTEXT: "dev-operator" }), "admin");
      assert.equal(await who([], { DEBVISOR_SERVER: "127.0.0.1:1" }), "exit 6");
      assert.equal(
        await who(["--server", daemon.grpcAddress], { DEBVISOR_SERVER: "127.0.0.1:1" }),
        "admin",
      );
      const key = await json<{ token: string }>(
        "apikey",
        "create",
        "--roles",
        "viewer",
        "--principal",
        "via-env",
      );
      assert.equal(await who([], { DEBVISOR_TOKEN: key.token }), "via-env");
      const keyFile = join(home, "admin-op.key");
      writeFileSync(keyFile, readFileSync(join(dir, "pki", "operator.apikey")));
      assert.equal(
        await who(["--token-file", keyFile], { DEBVISOR_TOKEN: key.token }),
        "dev-operator",
      );
      assert.equal(
        (await hvctl(["--config", config, "auth", "whoami"], { DEBVISOR_CONFIG: "/nonexistent" }))
          .code,
        0,
        "--config wins over DEBVISOR_CONFIG",
      );
    });

    it("reads a JWT or key printed by a command (no shell), and an API key embedded in the file", async () => {
      const keyFile = join(dir, "pki", "operator.apikey");
      const set = await hvctl([
        "--config",
        mine,
        "config",
        "set-context",
        "by-command",
        "--server",
        daemon.grpcAddress,
        "--ca",
        join(dir, "pki", "ca.crt"),
        "--token-command",
        "/bin/cat",
        "--token-arg",
        keyFile,
      ]);
      assert.equal(set.code, 0, set.stderr);
      const file = parseYaml(readFileSync(mine, "utf8")) as {
        contexts: { name: string; credential: { tokenCommand?: string[] } }[];
      };
      assert.deepEqual(
        file.contexts.find((c) => c.name === "by-command")?.credential.tokenCommand,
        ["/bin/cat", keyFile],
      );
      const me = await hvctl(["--config", mine, "--context", "by-command", "auth", "whoami"]);
      assert.equal(me.code, 0, me.stderr);
      assert.match(me.stdout, /^principal:\s+dev-operator$/m);
      await hvctl([
        "--config",
        mine,
        "config",
        "set-context",
        "by-command",
        "--token-command",
        "/bin/false",
      ]);
      const failing = await hvctl(["--config", mine, "--context", "by-command", "auth", "whoami"]);
      assert.equal(failing.code, 2);
      assert.match(failing.stderr, /credential\.tokenCommand \/bin\/false: exited 1/);
      const semi = await hvctl([
        "--config",
        mine,
        "config",
        "set-context",
        "by-command",
        "--token-command",
        `/bin/cat ${keyFile}; echo pwned`,
      ]);
      assert.equal(semi.code, 0);
      const noShell = await hvctl(["--config", mine, "--context", "by-command", "auth", "whoami"]);
      assert.equal(noShell.code, 2, "the whole string is one program name: no shell parses it");
      assert.match(noShell.stderr, /not found/);

      const embedded = await apiKeyContext("inline", ["--embed"], { args: ["--config", mine] });
      assert.equal(embedded.code, 0, embedded.stderr);
      const text = readFileSync(mine, "utf8");
      assert.ok(text.includes(readFileSync(keyFile, "utf8").trim()), "the key is in the file");
      assert.ok(text.includes("caData:"), "so is the CA");
      const listed = await hvctl(["--config", mine, "config", "get-contexts", "-o", "wide"]);
      assert.match(listed.stdout, /^\s+inline\s+\S+\s+api-key\s+\(inline\)\s/m);
      assert.ok(!listed.stdout.includes("dvk_"), "get-contexts never prints a secret");
      const whoInline = await hvctl([
        "--config",
        mine,
        "--context",
        "inline",
        "-o",
        "json",
        "auth",
        "whoami",
      ]);
      assert.equal(
        (JSON.parse(whoInline.stdout) as { principal: string }).principal,
        "dev-operator",
      );
      await ok("--config", mine, "config", "delete-context", "inline");
      assert.equal(
        (await hvctl(["--config", mine, "--context", "inline", "auth", "whoami"])).code,
        2,
      );
    });
  });
});
