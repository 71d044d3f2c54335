import assert from "node:assert/strict";
import { join } from "node:path";
import { HVCTL_BIN, runProcess } from "./daemon-process.js";

/** The built debvisor-agent entry point. */
export const AGENT_BIN = join(HVCTL_BIN, "..", "debvisor-agent.js");

/**
 * Enrolls `node` into `nodeDir` the way an operator does: a one-time token
 * from `hvctl token create` (with the hvctl context file `hvctlConfig`),
 * then `debvisor-agent enroll` pinning the CA fingerprint it printed.
 */
export async function enrollAgentNode(options: {
  readonly hvctlConfig: string;
  readonly server: string;
  readonly node: string;
  readonly nodeDir: string;
}): Promise<void> {
  const t = await runProcess(process.execPath, [
    HVCTL_BIN,
    "--config",
    options.hvctlConfig,
    "-o",
    "json",
    "token",
    "create",
    options.node,
  ]);
  assert.equal(t.code, 0, t.stderr);
  const { token, caFingerprint } = JSON.parse(t.stdout) as {
    token: string;
    caFingerprint: string;
  };
  const r = await runProcess(
    process.execPath,
    [
      AGENT_BIN,
      "enroll",
      "--server",
      options.server,
      "--ca-fingerprint",
      caFingerprint,
      "--dir",
      options.nodeDir,
    ],
    { env: { DEBVISOR_ENROLL_TOKEN: token } },
  );
  assert.equal(r.code, 0, r.stderr);
}
