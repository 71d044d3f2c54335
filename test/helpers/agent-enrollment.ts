import assert from "node:assert/strict";
import { join } from "node:path";
import { HVCTL_BIN, runProcess } from "./daemon-process.js";

/** The compiled debvisor-agent entry point. */
export const AGENT_BIN = join(HVCTL_BIN, "..", "debvisor-agent.js");

/**
 * Enrolls `node` into `dir` the way an operator does: a one-time token from
 * `hvctl token create` (with the admin context in `hvctlConfig`), then
 * `debvisor-agent enroll` pinning the CA fingerprint, the token in the
 * environment. Returns `dir`.
 */
export async function enrollAgent(
  hvctlConfig: string,
  server: string,
  node: string,
  dir: string,
): Promise<string> {
  const t = await runProcess(process.execPath, [
    HVCTL_BIN,
    "--config",
    hvctlConfig,
    "-o",
    "json",
    "token",
    "create",
    node,
  ]);
  assert.equal(t.code, 0, t.stderr);
  const { token, caFingerprint } = JSON.parse(t.stdout) as { token: string; caFingerprint: string };
  const r = await runProcess(
    process.execPath,
    [AGENT_BIN, "enroll", "--server", server, "--ca-fingerprint", caFingerprint, "--dir", dir],
    { env: { DEBVISOR_ENROLL_TOKEN: token } },
  );
  assert.equal(r.code, 0, r.stderr);
  return dir;
}
