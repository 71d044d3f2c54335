// A dev daemon with a "provisioner" role (may create enrollment tokens and
// holds the node role's grants) and an API key of it: what the enrollment
// tests attack the built-in CA with.

import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { type ResolvedContext, resolveContext } from "../../src/client/index.js";
import { type DaemonProcess, startDevDaemon } from "./daemon-process.js";
import { bearerContext, devClients } from "./dev-clients.js";

/** The daemon, the dev admin's context and clients of the provisioner's key. */
export interface ProvisionerDaemon {
  readonly daemon: DaemonProcess;
  readonly admin: ResolvedContext;
  readonly provisioner: ReturnType<typeof devClients>;
}

/** Starts it in `dir` with `config` added; every channel opened goes into `channels`. */
export async function startProvisionerDaemon(
  dir: string,
  channels: grpc.Client[],
  config: object = {},
): Promise<ProvisionerDaemon> {
  const daemon = await startDevDaemon(dir, {
    rbac: { roles: [{ name: "provisioner", grants: ["pki:token:create", "node:*"] }] },
    ...config,
  });
  const admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
  const key = await devClients(admin, channels).access.createApiKey({
    principal: "provision-bot",
    roles: ["provisioner"],
  });
  return { daemon, admin, provisioner: devClients(bearerContext(admin, key.token), channels) };
}
