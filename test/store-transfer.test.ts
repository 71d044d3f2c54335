import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { GENERATION_FLOOR_KEY } from "../src/cluster/index.js";
import { silentLogger } from "../src/core/index.js";
import { createEtcdStore, createSqliteStore, type KvStore, rangeAll } from "../src/store/index.js";
import { HVCTL_BIN, runProcess } from "./helpers/daemon-process.js";
import { type EtcdServer, startEtcd } from "./helpers/etcd-server.js";

const RPCD = join(HVCTL_BIN, "..", "debvisor-rpcd.js");

async function dump(store: KvStore): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for await (const kv of rangeAll(store, ""))
    out.push([kv.key, Buffer.from(kv.value).toString("hex")]);
  return out;
}

/** An import's keys besides the generation floor it adds (src/server/store-transfer-generation.test.ts). */
async function imported(store: KvStore): Promise<[string, string][]> {
  const all = await dump(store);
  assert.ok(
    all.some(([k]) => k === GENERATION_FLOOR_KEY),
    "the import keeps the source's revision as the generation floor",
  );
  return all.filter(([k]) => k !== GENERATION_FLOOR_KEY);
}

describe("debvisor-rpcd store export / import", () => {
  const dir = mkdtempSync(join(tmpdir(), "dv-transfer-"));
  const config = (name: string, store: object) => {
    const p = join(dir, `${name}.yaml`);
    writeFileSync(p, JSON.stringify({ store })); // JSON is YAML
    return p;
  };
  const source = join(dir, "a.db");
  let expected: [string, string][];
  let etcd: EtcdServer | undefined;

  before(async () => {
    const a = createSqliteStore({ path: source, logger: silentLogger });
    for (let i = 0; i < 250; i++)
      await a.put(`nodes/n-${String(i).padStart(3, "0")}`, randomBytes(200 + i));
    await a.put("binary/zero", new Uint8Array(0));
    const lease = await a.grantLease(60_000);
    await a.put("ephemeral/k", new Uint8Array([1]), { lease: lease.id });
    expected = (await dump(a)).filter(([k]) => !k.startsWith("ephemeral/"));
    await a.close();
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd?.stop();
  });

  it("moves every durable key from one SQLite store to another, leaving leased keys out", async () => {
    const file = join(dir, "export.jsonl");
    const exp = await runProcess(process.execPath, [
      RPCD,
      "--config",
      config("a", { path: source }),
      "store",
      "export",
      "--out",
      file,
    ]);
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stderr, /exported 251 keys \(1 leased keys left out\)/);
    assert.match(
      readFileSync(file, "utf8").split("\n")[0] ?? "",
      /"format":"debvisor-store-export"/,
    );
    const target = join(dir, "b.db");
    const imp = await runProcess(process.execPath, [
      RPCD,
      "--config",
      config("b", { path: target }),
      "store",
      "import",
      "--in",
      file,
    ]);
    assert.equal(imp.code, 0, imp.stderr);
    const b = createSqliteStore({ path: target, logger: silentLogger });
    assert.deepEqual(await imported(b), expected);
    await b.close();
  });

  it("refuses to import into a store that already holds keys", async () => {
    const file = join(dir, "export.jsonl");
    const again = await runProcess(process.execPath, [
      RPCD,
      "--config",
      config("b", { path: join(dir, "b.db") }),
      "store",
      "import",
      "--in",
      file,
    ]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /not empty/);
  });

  it("refuses malformed input and names the line", async () => {
    const bad = join(dir, "bad.jsonl");
    writeFileSync(
      bad,
      `${readFileSync(join(dir, "export.jsonl"), "utf8").split("\n")[0]}\n{"key":"k","value":"not base64!"}\n`,
    );
    const r = await runProcess(process.execPath, [
      RPCD,
      "--config",
      config("c", { path: join(dir, "c.db") }),
      "store",
      "import",
      "--in",
      bad,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /line 2: expected/);
  });

  it("moves a single-node SQLite install to etcd", async (t) => {
    if (etcd === undefined) {
      t.skip("etcd is not installed (apt-get install etcd-server)");
      return;
    }
    const prefix = `/transfer-${randomBytes(4).toString("hex")}/`;
    const exp = await runProcess(process.execPath, [
      RPCD,
      "--config",
      config("a2", { path: source }),
      "store",
      "export",
    ]);
    assert.equal(exp.code, 0, exp.stderr);
    const file = join(dir, "stdout-export.jsonl");
    writeFileSync(file, exp.stdout);
    const cfg = config("etcd", { backend: "etcd", endpoints: [etcd.endpoint], prefix });
    const imp = await runProcess(process.execPath, [
      RPCD,
      "--config",
      cfg,
      "store",
      "import",
      "--in",
      file,
    ]);
    assert.equal(imp.code, 0, imp.stderr);
    const e = createEtcdStore({ endpoints: [etcd.endpoint], prefix });
    assert.deepEqual(await imported(e), expected);
    await e.close();
  });
});
