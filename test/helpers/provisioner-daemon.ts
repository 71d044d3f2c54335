// A dev daemon with a "provisioner" role (may create enrollment tokens and
// holds the node role's grants) and an API key of it: what the enrollment
// tests attack the built-in CA with.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
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

/** A provisioner daemon for one suite; read its fields in the tests, not before. */
export interface SuiteProvisionerDaemon extends ProvisionerDaemon {
  /** Clients of `ctx` on a channel closed with the suite. */
  clientsOf(ctx: ResolvedContext): ReturnType<typeof devClients>;
}

/** Starts one before the tests of the calling suite (in a temporary directory) and stops it after them. */
export function provisionerDaemonForSuite(config: object = {}): SuiteProvisionerDaemon {
  const channels: grpc.Client[] = [];
  let dir: string | undefined;
  let started: ProvisionerDaemon | undefined;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-provisioner-"));
    started = await startProvisionerDaemon(dir, channels, config);
  });
  after(() => {
    for (const ch of channels) ch.close();
    started?.daemon.kill();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });
  const get = () => {
    if (started === undefined) throw new Error("the provisioner daemon is not started yet");
    return started;
  };
  return {
    get daemon() {
      return get().daemon;
    },
    get admin() {
      return get().admin;
    },
    get provisioner() {
      return get().provisioner;
    },
    clientsOf: (ctx) => devClients(ctx, channels),
  };
}
