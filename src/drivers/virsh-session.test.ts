import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, describe, it } from "node:test";
import { CommandError, runCommand } from "./command-runner.js";
import { createVirshSession } from "./virsh-session.js";

const hasVirsh = spawnSync("virsh", ["--version"], { encoding: "utf8" }).status === 0;
const URI = "test:///default";
const opts = { timeoutMs: 10_000 };

describe("createVirshSession (real virsh, test:///default)", {
  skip: !hasVirsh && "virsh is not installed",
}, () => {
  const sessions: { close(): Promise<void> }[] = [];
  const open = (uri = URI) => {
    const s = createVirshSession({ uri });
    sessions.push(s);
    return s;
  };
  after(async () => {
    for (const s of sessions) await s.close();
  });

  it("gives each command the same stdout, stderr and exit status as its own virsh process", async () => {
    const s = open();
    for (const args of [
      ["list", "--all", "--name"],
      ["dominfo", "--domain", "test"],
      ["domstate", "--domain", "test"],
      ["dominfo", "--domain", "ghost-01"],
      ["start", "--domain", "test"],
    ]) {
      const alone = await runCommand("virsh", ["-c", URI, ...args], {
        ...opts,
        env: { LC_ALL: "C" },
      });
      const inSession = await s.run("virsh", ["-c", URI, ...args], opts);
      // CPU time moves between the two runs; everything else must match.
      const mask = (t: string) => t.replace(/CPU time:.*\n/, "");
      assert.equal(mask(inSession.stdout), mask(alone.stdout), args.join(" "));
      assert.equal(inSession.stderr, alone.stderr, args.join(" "));
      assert.equal(inSession.exitCode, alone.exitCode, args.join(" "));
    }
  });

  it("keeps the test driver's state from one command to the next", async () => {
    const s = open();
    const run = (...args: string[]) => s.run("virsh", ["-c", URI, ...args], opts);
    assert.equal((await run("domstate", "--domain", "test")).stdout.trim(), "running");
    assert.equal((await run("destroy", "--domain", "test")).exitCode, 0);
    assert.equal((await run("domstate", "--domain", "test")).stdout.trim(), "shut off");
    assert.equal(s.commandCount(), 3);
  });

  it("reports a connection that cannot open as a failed command with virsh's stderr", async () => {
    const s = open("test:///nonexistent-dv/node.xml");
    const r = await s.run("virsh", ["-c", "test:///nonexistent-dv/node.xml", "list"], opts);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /failed to connect to the hypervisor/);
  });

  it("kills a command past its timeout; the next command gets a fresh session", async () => {
    const s = open();
    const run = (...args: string[]) => s.run("virsh", ["-c", URI, ...args], opts);
    await run("destroy", "--domain", "test");
    await assert.rejects(
      s.run("virsh", ["-c", URI, "event", "--all", "--loop"], { timeoutMs: 300 }),
      (e: unknown) => e instanceof CommandError && e.kind === "timeout",
    );
    // A new connection: the test driver's state is back to its start.
    assert.equal((await run("domstate", "--domain", "test")).stdout.trim(), "running");
  });

  it("rejects a queued command at once when it is aborted, and never runs it", async () => {
    const s = open();
    const slow = s.run("virsh", ["-c", URI, "event", "--all", "--loop", "--timeout", "1"], opts);
    const ac = new AbortController();
    const queued = s.run("virsh", ["-c", URI, "destroy", "--domain", "test"], {
      ...opts,
      signal: ac.signal,
    });
    ac.abort();
    await assert.rejects(queued, (e: unknown) => e instanceof CommandError && e.kind === "aborted");
    await slow;
    const state = await s.run("virsh", ["-c", URI, "domstate", "--domain", "test"], opts);
    assert.equal(state.stdout.trim(), "running");
    assert.equal(s.commandCount(), 2);
  });

  it("refuses arguments interactive virsh would split or quote, and other programs", () => {
    const s = open();
    for (const bad of ["a b", "x;destroy", "'q'", '"q"', "#c", "a\\b", "$(id)", ""]) {
      assert.throws(() => s.run("virsh", ["-c", URI, "dominfo", bad], opts), TypeError, bad);
    }
    assert.throws(() => s.run("sh", ["-c", URI, "list"], opts), TypeError);
    assert.throws(() => s.run("virsh", ["-c", "test:///other", "list"], opts), TypeError);
    assert.equal(s.commandCount(), 0);
  });
});

describe("createVirshSession without virsh", () => {
  it("rejects not-found when the program does not exist", async () => {
    const s = createVirshSession({ uri: URI, virsh: "/nonexistent/virsh" });
    await assert.rejects(
      s.run("/nonexistent/virsh", ["-c", URI, "list"], opts),
      (e: unknown) => e instanceof CommandError && e.kind === "not-found",
    );
    await s.close();
  });
});
