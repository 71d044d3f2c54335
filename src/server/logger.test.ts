import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createLogger } from "./logger.js";

function logTo(level: string) {
  const file = join(mkdtempSync(join(tmpdir(), "dv-log-")), "daemon.log");
  const logger = createLogger(level, file);
  return {
    logger,
    /**
     * The lines written so far, once there are at least `atLeast` (the file
     * opens asynchronously, and a write already handed to the file system
     * may land after flushSync returns: waits up to 10 s for both, a loaded machine's
     * file system being slow at times).
     */
    async lines(atLeast = 1): Promise<Record<string, unknown>[]> {
      const until = Date.now() + 10_000;
      for (;;) {
        const late = Date.now() >= until;
        let read: Record<string, unknown>[] | undefined;
        try {
          logger.flush();
          read = readFileSync(file, "utf8")
            .split("\n")
            .filter((l) => l !== "")
            .map((l) => JSON.parse(l) as Record<string, unknown>);
        } catch (err) {
          if (late) throw err;
        }
        if (read !== undefined && (read.length >= atLeast || late)) return read;
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

describe("the daemon logger", () => {
  it("writes a child's bindings, and its children's, on each of its lines", async () => {
    const { logger, lines } = logTo("info");
    const call = logger.child({ requestId: "r-1", method: "/debvisor.v1.NodeService/ListNodes" });
    call.child({ principal: "alice" }).warn({ code: 7 }, "call failed");
    call.info({}, "plain");
    const [failed, plain] = await lines(2);
    assert.equal(failed?.requestId, "r-1");
    assert.equal(failed?.principal, "alice");
    assert.equal(failed?.code, 7);
    assert.equal(failed?.msg, "call failed");
    assert.equal(plain?.requestId, "r-1");
    assert.equal(plain?.principal, undefined);
  });

  it("keeps the bindings as they were when the child was made", async () => {
    const { logger, lines } = logTo("info");
    const bindings: Record<string, unknown> = { requestId: "r-1" };
    const call = logger.child(bindings);
    bindings.requestId = "r-2";
    call.info({}, "line");
    assert.equal((await lines())[0]?.requestId, "r-1");
  });

  it("redacts secrets in bindings and in logged objects", async () => {
    const { logger, lines } = logTo("info");
    logger
      .child({ headers: { authorization: "Bearer dvk_secret" } })
      .info({ req: { password: "hunter2" } }, "line");
    const text = JSON.stringify(await lines());
    assert.ok(!text.includes("dvk_secret"), text);
    assert.ok(!text.includes("hunter2"), text);
  });

  it("writes only lines at the level set, which a reload changes for children made before", async () => {
    const { logger, lines } = logTo("info");
    const call = logger.child({ requestId: "r-1" });
    call.debug({}, "hidden");
    logger.setLevel("debug");
    call.debug({}, "shown");
    logger.setLevel("warn");
    call.info({}, "hidden too");
    assert.deepEqual(
      (await lines()).map((l) => l.msg),
      ["shown"],
    );
  });
});
