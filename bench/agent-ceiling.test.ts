import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { measureAgentCeiling } from "./agent-ceiling.js";

describe("the agent-stream ceilings of the agents benchmark", () => {
  for (const kind of ["grpc-js", "http2"] as const)
    it(`${kind}: welcomes every stream and takes its heartbeats`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "dv-agent-ceiling-"));
      const lines: string[] = [];
      try {
        const run = await measureAgentCeiling(
          kind,
          { agents: 4, heartbeatIntervalMs: 300, vmsPerNode: 20, windowIntervals: 3 },
          dir,
          undefined,
          (l) => lines.push(l),
        );
        assert.deepEqual(run.problems, [], lines.join("\n"));
        // 4 streams at one heartbeat each per 300 ms, over 3 intervals: about 12.
        assert.ok(run.calls >= 8 && run.calls <= 20, `${run.calls} heartbeats in the window`);
        // /proc counts CPU in 10 ms ticks: a few idle streams may cost none of them.
        assert.ok(run.cpuMsPerHeartbeat >= 0, `CPU per heartbeat ${run.cpuMsPerHeartbeat}`);
        assert.ok(Number.isFinite(run.rssPerStreamKib) && Number.isFinite(run.heapPerStreamKib));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
});
