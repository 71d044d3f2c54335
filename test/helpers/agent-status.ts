import { type LocalStatus, loadAgentConfig, readLocalStatus } from "../../src/agent/index.js";

/**
 * What `debvisor-agent status --dir DIR --driver sim [--sim-shared-dir S]
 * [--storage sim] -o json` prints, read in this process without the CLI's
 * start-up: the configuration the CLI would load (with `env` over this
 * process's environment, as a spawn with it would see), the hypervisor
 * opened read-only and closed again at each call.
 */
export function agentStatus(
  agentDir: string,
  more: { sharedDir?: string; storage?: "sim"; env?: NodeJS.ProcessEnv } = {},
): Promise<LocalStatus> {
  return readLocalStatus(
    loadAgentConfig({
      env: { ...process.env, ...more.env },
      flags: {
        dir: agentDir,
        driver: { kind: "sim" },
        sim: { sharedDir: more.sharedDir },
        storage: { kind: more.storage },
      },
    }),
  );
}
