import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, describe, it } from "node:test";
import type { Logger } from "../core/index.js";
import {
  type CommandRunner,
  createLibvirtDriver,
  createVirshSession,
  type DefiningDriver,
  type DomainSpec,
} from "../drivers/index.js";
import { HA_FLAG_REFRESH_MS, trackDomainHaFlags } from "./domain-ha-flags.js";

const hasVirsh = spawnSync("virsh", ["--version"], { encoding: "utf8" }).status === 0;
const URI = "test:///default";

const spec = (id: string, ha: boolean): DomainSpec => ({
  id,
  name: "",
  vcpus: 1,
  memoryBytes: 128n * 1024n ** 2n,
  disks: [],
  ha,
  cpuModel: "",
});

/**
 * The flags of a libvirt node (test:///default in one virsh session) on a
 * manual clock; `failing` ids' metadata reads fail as an unreachable
 * libvirtd does. `inner` is the driver as other agents and operators reach
 * the node (bypassing the flags): a domain it defines just appears.
 */
function node(sessions: { close(): Promise<void> }[]) {
  const session = createVirshSession({ uri: URI });
  sessions.push(session);
  const failing = new Set<string>();
  const reads: string[] = [];
  const runner: CommandRunner = (program, args, options) => {
    if (args[2] === "metadata") {
      const vm = args[args.indexOf("--domain") + 1] ?? "";
      reads.push(vm);
      if (failing.has(vm))
        return Promise.resolve({
          exitCode: 1,
          signal: null,
          stdout: "",
          stderr: "error: Cannot recv data: Connection reset by peer\n",
        });
    }
    return session.run(program, args, options);
  };
  const inner = createLibvirtDriver({ nodeId: "hv01", uri: URI, runner });
  const warnings: object[] = [];
  const log: Logger = {
    debug() {},
    info() {},
    warn: (obj) => void warnings.push(obj),
    error() {},
    child: () => log,
  };
  const clock = { ms: 1_000_000 };
  const flags = trackDomainHaFlags(inner, log, () => clock.ms);
  const list = () => flags.driver.list(AbortSignal.timeout(20_000));
  return { inner, flags, failing, reads, warnings, clock, list };
}

describe("trackDomainHaFlags (libvirt, virsh -c test:///default)", {
  skip: !hasVirsh && "virsh is not installed",
}, () => {
  const sessions: { close(): Promise<void> }[] = [];
  after(async () => {
    for (const s of sessions) await s.close();
  });
  const signal = () => AbortSignal.timeout(20_000);

  it("reads a domain's flag when a listing first shows it, not at every listing, and drops it once gone", async () => {
    const n = node(sessions);
    await n.inner.define(spec("ha-01", true), signal());
    assert.equal(n.flags.isHa("ha-01"), false, "not listed yet: unknown");
    await n.list();
    assert.equal(n.flags.isHa("ha-01"), true);
    assert.equal(n.flags.isHa("test"), false, "test:///default's own domain has no metadata");
    assert.deepEqual(n.reads.sort(), ["ha-01", "test"]);
    await n.list();
    assert.equal(n.reads.length, 2, "no read for domains already known");
    await n.inner.undefine("ha-01", { force: true, signal: signal() });
    await n.list();
    // Defined again (by hand, as not HA) under the same name: read anew, not remembered.
    await n.inner.define(spec("ha-01", false), signal());
    await n.list();
    assert.equal(n.flags.isHa("ha-01"), false);
    assert.deepEqual(n.reads.sort(), ["ha-01", "ha-01", "test"]);
    // Read again once the refresh age passed (an operator's edit of the metadata is seen).
    n.clock.ms += HA_FLAG_REFRESH_MS;
    await n.list();
    assert.equal(n.reads.length, 5);
  });

  it("knows what its own define wrote without reading it, and forgets what it undefines", async () => {
    const n = node(sessions);
    const driver = n.flags.driver as DefiningDriver;
    await driver.define(spec("ha-02", true), signal());
    assert.equal(n.flags.isHa("ha-02"), true, "a VM just created starts under a lease");
    await n.list();
    assert.deepEqual(n.reads, ["test"]);
    await driver.undefine("ha-02", { force: true, signal: signal() });
    assert.equal(n.flags.isHa("ha-02"), false);
  });

  it("takes a domain whose flag it cannot read as not HA, logs it once, and reads it again at the next listing", async () => {
    const n = node(sessions);
    await n.inner.define(spec("ha-03", true), signal());
    n.failing.add("ha-03");
    const ids = (await n.list()).map((d) => d.id);
    assert.ok(ids.includes("ha-03"), "the listing does not fail");
    await n.list();
    assert.equal(n.flags.isHa("ha-03"), false);
    assert.deepEqual(
      n.reads.filter((id) => id === "ha-03").length,
      2,
      "tried again at each listing",
    );
    assert.equal(n.warnings.length, 1, "logged once");
    n.failing.delete("ha-03");
    await n.list();
    assert.equal(n.flags.isHa("ha-03"), true);
    // Known HA, a refresh that fails keeps it HA (a fence still stops it).
    n.failing.add("ha-03");
    n.clock.ms += HA_FLAG_REFRESH_MS;
    await n.list();
    assert.equal(n.flags.isHa("ha-03"), true);
    assert.equal(n.warnings.length, 2);
  });
});
