import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { Command } from "commander";
import { createAuditService } from "../src/audit/index.js";
import {
  buildProgram,
  completionScript,
  loadNouns,
  METHOD_PERMISSIONS,
  runCli,
} from "../src/cli/index.js";
import {
  createDomainServices,
  createEventLog,
  createEventService,
  createInventory,
} from "../src/cluster/index.js";
import { silentLogger, systemClock } from "../src/core/index.js";
import {
  createAccessPolicy,
  createAccessService,
  createEnrollmentService,
} from "../src/security/index.js";
import { createSqliteStore } from "../src/store/index.js";
import { HVCTL_BIN } from "./helpers/daemon-process.js";
import { missingTool } from "./helpers/required-tools.js";

/** Runs hvctl in this process, capturing what it writes. */
async function run(args: string[]) {
  let out = "";
  let err = "";
  const code = await runCli(args, {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    env: {},
  });
  return { code, out, err };
}

/** Every command path below hvctl, like ["node", "list"]. */
function paths(cmd: Command, prefix: string[] = []): string[][] {
  return cmd.commands.flatMap((c) => [[...prefix, c.name()], ...paths(c, [...prefix, c.name()])]);
}

const program = buildProgram(
  { out: () => undefined, err: () => undefined, env: {} },
  await loadNouns(),
).program;

describe("hvctl --help", () => {
  it("lists the exit codes of each class in the top-level help", async () => {
    const r = await run(["--help"]);
    assert.equal(r.code, 0);
    for (const line of [
      /^ {2}2 {2}usage/m,
      /^ {2}3 {2}unauthenticated/m,
      /^ {2}4 {2}permission denied/m,
      /^ {2}5 {2}not found/m,
      /^ {2}6 {2}unavailable/m,
    ])
      assert.match(r.out, line);
  });

  for (const path of paths(program)) {
    it(`hvctl ${path.join(" ")} --help has a one-line description and an example`, async () => {
      const r = await run([...path, "--help"]);
      assert.equal(r.code, 0, r.err);
      const usage = r.out.split("\n");
      assert.match(usage[0] ?? "", new RegExp(`^Usage: hvctl ${path.join(" ")}\\b`));
      assert.ok((usage[2] ?? "").length > 10, "a description under the usage line");
      assert.match(r.out, /\nExamples:\n {2}(hvctl|source <\(hvctl) /);
    });
  }
});

describe("METHOD_PERMISSIONS", () => {
  it("matches the permission the server requires for every method it serves", () => {
    const store = createSqliteStore({
      path: join(mkdtempSync(join(tmpdir(), "dv-hvctl-perm-")), "s.db"),
      logger: silentLogger,
    });
    const services = [
      ...createDomainServices({
        inventory: createInventory({ store, clock: systemClock }),
        storage: { listSnapshots: async () => undefined },
        store,
        clock: systemClock,
      }),
      createAccessService({
        policy: () => createAccessPolicy({}),
        apiKeys: undefined as never,
        bindings: undefined as never,
        roles: undefined as never,
        rotationGraceMs: 0,
      }),
      createAuditService({ log: undefined as never, closing: new AbortController().signal }),
      createEventService({
        log: createEventLog({ store, clock: systemClock, maxCount: 100, maxAgeMs: 60_000 }),
      }),
      createEnrollmentService({
        store,
        clock: systemClock,
        ca: undefined,
        revocations: undefined as never,
        revokedServers: undefined as never,
        bindings: undefined as never,
        policy: () => createAccessPolicy({}),
        lockout: undefined as never,
      }),
    ];
    const served = services.flatMap((s) => s.methods.map((m) => m.spec));
    for (const spec of served)
      assert.equal(
        METHOD_PERMISSIONS[spec.path],
        spec.permission,
        `${spec.path}: add it to src/cli/permissions.ts with the server's permission`,
      );
    assert.deepEqual(
      Object.keys(METHOD_PERMISSIONS).filter((p) => !served.some((s) => s.path === p)),
      [],
      "no entries for methods the server does not serve",
    );
    store.close();
  });
});

/** Completes `words` (the last one being typed) with the script in bash, as bash would. */
function complete(script: string, config: string, words: string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), "dv-hvctl-comp-"));
  writeFileSync(join(dir, "hvctl.bash"), script);
  const r = spawnSync(
    "bash",
    [
      "-c",
      `source ${join(dir, "hvctl.bash")}
hvctl() { "${process.execPath}" "${HVCTL_BIN}" --config "${config}" "$@"; }
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}
_hvctl; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ],
    { encoding: "utf8", timeout: 20_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split("\n").filter((l) => l !== "");
}

describe("hvctl completion", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-hvctl-comp-cfg-"));
  const config = join(dir, "hvctl.yaml");
  writeFileSync(
    config,
    `apiVersion: debvisor.io/v1
kind: HvctlConfig
contexts:
  - {name: lab, server: "127.0.0.1:1", caData: x, credential: {apiKey: k}}
  - {name: prod, server: "127.0.0.1:2", caData: x, credential: {apiKey: k}}
`,
  );

  it("completes nouns, verbs, flags and flag values in bash, from the command tree", async () => {
    const r = await run(["completion", "bash"]);
    assert.equal(r.code, 0);
    const nouns = complete(r.out, config, ["hvctl", ""]);
    for (const noun of program.commands.map((c) => c.name()))
      assert.ok(nouns.includes(noun), `${noun} is completed`);
    assert.deepEqual(complete(r.out, config, ["hvctl", "--context", "lab", "node", "l"]), ["list"]);
    assert.ok(complete(r.out, config, ["hvctl", "node", "list", "--re"]).includes("--readiness"));
    assert.deepEqual(complete(r.out, config, ["hvctl", "node", "list", "--readiness", ""]), [
      "ready",
      "not-ready",
    ]);
    assert.deepEqual(complete(r.out, config, ["hvctl", "-o", ""]), [
      "table",
      "wide",
      "json",
      "yaml",
    ]);
    assert.deepEqual(complete(r.out, config, ["hvctl", "config", "use-context", ""]), [
      "lab",
      "prod",
    ]);
    assert.deepEqual(complete(r.out, config, ["hvctl", "completion", ""]), ["bash", "zsh"]);
  });

  it("writes a zsh script that zsh accepts, with descriptions", async (t) => {
    const r = await run(["completion", "zsh"]);
    assert.equal(r.code, 0);
    assert.match(r.out, /^#compdef hvctl\n/);
    assert.match(r.out, /'list:list nodes with their last-known state'/);
    const skip = missingTool(
      "zsh",
      spawnSync("zsh", ["--version"]).status === 0,
      "apt-get install zsh",
    );
    if (skip) return t.skip(skip);
    const dir = mkdtempSync(join(tmpdir(), "dv-hvctl-zsh-"));
    writeFileSync(join(dir, "_hvctl"), r.out);
    const check = spawnSync("zsh", ["-n", join(dir, "_hvctl")], { encoding: "utf8" });
    assert.equal(check.status, 0, check.stderr);
  });

  it("completes a noun added later without any change to the generator", async () => {
    const { program: p } = buildProgram(
      { out: () => undefined, err: () => undefined, env: {} },
      await loadNouns(),
    );
    p.command("gadget").description("x").command("polish").description("y");
    assert.match(completionScript(p, "bash"), /'gadget'\) printf '%s\\n' 'polish'/);
  });
});
