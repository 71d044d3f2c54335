import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  classifyVirshError,
  parseDominfo,
  parseDomjobinfo,
  parseDomstate,
  parseHaMetadata,
  parseMigrationProgress,
  parseNameList,
  VirshParseError,
} from "./virsh-parse.js";

interface Recorded {
  readonly stdout: string;
  readonly stderr?: string;
  readonly stderrChunks?: readonly string[];
}
const load = (file: string) =>
  (
    JSON.parse(
      readFileSync(new URL(`../../../test/fixtures/virsh/${file}`, import.meta.url), "utf8"),
    ) as { cases: Record<string, Recorded> }
  ).cases;
const recorded = load("recorded.json");
const written = load("written.json");
const rec = (name: string): Recorded => {
  const r = recorded[name] ?? written[name];
  if (r === undefined) throw new Error(`no fixture ${name}`);
  return r;
};
const stderrOf = (name: string) => {
  const r = rec(name);
  return r.stderr ?? (r.stderrChunks ?? []).join("");
};

describe("parseNameList", () => {
  it("reads the names of virsh list --all --name, in virsh's order", () => {
    assert.deepEqual(parseNameList(rec("node-list").stdout), [
      "web-01",
      "cache-01",
      "scratch-01",
      "db-01",
    ]);
    assert.deepEqual(parseNameList(rec("default-list").stdout), ["test"]);
    assert.deepEqual(parseNameList("\n"), []);
  });
});

describe("parseDominfo", () => {
  it("ok-running: state, vCPUs, max memory in bytes, persistence", () => {
    assert.deepEqual(parseDominfo(rec("default-dominfo-test").stdout), {
      name: "test",
      state: "running",
      vcpus: 2,
      maxMemoryBytes: 8388608n * 1024n,
      usedMemoryBytes: 2097152n * 1024n,
      persistent: true,
    });
  });

  it("ok-stopped, ok-paused, ok-transient", () => {
    const db = parseDominfo(rec("node-dominfo-db-01").stdout);
    assert.equal(db.state, "stopped");
    assert.equal(db.vcpus, 4);
    assert.equal(db.maxMemoryBytes, 4n * 1024n ** 3n);
    assert.equal(parseDominfo(rec("node-dominfo-cache-01").stdout).state, "paused");
    const scratch = parseDominfo(rec("node-dominfo-scratch-01").stdout);
    assert.equal(scratch.persistent, false);
    assert.equal(scratch.state, "running");
  });

  it("fail-truncated: output without the needed lines is a parse error, not a guess", () => {
    const full = rec("default-dominfo-test").stdout;
    const cut = full.split("\n").slice(0, 4).join("\n");
    assert.throws(() => parseDominfo(cut), VirshParseError);
    assert.throws(
      () => parseDominfo(full.replace("State:          running", "State:          no state")),
      VirshParseError,
    );
    assert.throws(() => parseDominfo(full.replace("8388608 KiB", "8 GiB")), VirshParseError);
  });
});

describe("parseDomstate", () => {
  it("maps virsh's state words", () => {
    assert.equal(parseDomstate(rec("node-domstate-web-01").stdout), "running");
    assert.equal(parseDomstate(rec("node-domstate-db-01").stdout), "stopped");
    assert.equal(parseDomstate(rec("node-domstate-cache-01").stdout), "paused");
    assert.equal(parseDomstate("in shutdown\n\n"), "running");
    assert.equal(parseDomstate("pmsuspended\n\n"), "paused");
    assert.equal(parseDomstate("crashed\n\n"), "crashed");
    assert.throws(() => parseDomstate("\n"), VirshParseError);
    assert.throws(() => parseDomstate("exploded\n"), VirshParseError);
  });
});

describe("parseMigrationProgress", () => {
  it("reads both virsh formats and the progress before an error on the same line", () => {
    const lines = (name: string) => stderrOf(name).split(/\r\n|\r|\n/);
    const percents = (name: string) =>
      lines(name)
        .map(parseMigrationProgress)
        .filter((p) => p !== undefined);
    assert.deepEqual(percents("qemu-migrate-live-progress"), [0, 12, 45, 38, 80, 97, 100]);
    assert.deepEqual(percents("qemu-migrate-live-progress-2dp"), [0, 45.5, 99.99, 100]);
    assert.deepEqual(percents("qemu-migrate-live-failed"), [0, 31, 62]);
    assert.equal(parseMigrationProgress("error: operation failed"), undefined);
    assert.equal(parseMigrationProgress("Migration: [999 %]"), undefined);
  });
});

describe("parseDomjobinfo", () => {
  it("reads bytes and the expected downtime of a migration job", () => {
    const info = parseDomjobinfo(rec("qemu-domjobinfo-migrating").stdout);
    assert.equal(info.jobType, "Unbounded");
    assert.equal(info.dataProcessedBytes, (412337n * 1024n ** 2n) / 1000n);
    assert.equal(info.dataTotalBytes, (2008n * 1024n ** 3n) / 1000n);
    assert.equal(info.dataRemainingBytes, (1586n * 1024n ** 3n) / 1000n);
    assert.equal(info.expectedDowntimeMs, 300);
  });

  it("reads a job type of None with no figures", () => {
    const info = parseDomjobinfo("Job type:         None        \n\n");
    assert.deepEqual(info, { jobType: "None" });
  });
});

describe("classifyVirshError", () => {
  it("tells a missing domain, an unreachable hypervisor and an unsupported call apart", () => {
    assert.equal(classifyVirshError(stderrOf("default-dominfo-missing")), "not-found");
    assert.equal(
      classifyVirshError("error: Domain not found: no domain with matching name 'x'"),
      "not-found",
    );
    assert.equal(classifyVirshError(stderrOf("unreachable-list")), "unavailable");
    assert.equal(classifyVirshError(stderrOf("qemu-unreachable-list")), "unavailable");
    assert.equal(classifyVirshError(stderrOf("default-migrate-unsupported")), "unsupported");
    assert.equal(classifyVirshError(stderrOf("qemu-migrate-live-failed")), "other");
    assert.equal(classifyVirshError(stderrOf("default-start-running")), "other");
  });
});

describe("parseHaMetadata", () => {
  it("reads ha='true' of DebVisor's vm element only, as virsh metadata prints it (no prefix)", () => {
    assert.equal(parseHaMetadata('<vm ha="true"/>\n\n'), true);
    assert.equal(parseHaMetadata('<vm ha="false"/>\n'), false);
    assert.equal(
      parseHaMetadata("<dv:vm xmlns:dv='https://debvisor.io/xmlns/vm/1' ha='true'/>"),
      true,
    );
    assert.equal(parseHaMetadata('<vm note="ha=&quot;true&quot;" ha="false">\n</vm>'), false);
    assert.equal(parseHaMetadata('<vm ha="TRUE"/>'), false);
    assert.equal(parseHaMetadata('<vm ha="1"/>'), false);
    assert.equal(parseHaMetadata("<vm/>"), false);
    assert.equal(parseHaMetadata('<other ha="true"/>'), false);
    assert.throws(() => parseHaMetadata("\n"), VirshParseError);
    assert.throws(() => parseHaMetadata("ha=true"), VirshParseError);
  });
});
