// A bare AgentService server over mutual TLS, with the daemon's transport
// settings and a Connect handler of the test's own: for tests of the
// agent's side of the stream and of the transport under it.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { defineService, silentLogger, validationStage } from "../../src/core/index.js";
import {
  type AgentMessage,
  AgentService,
  type ControlMessage,
} from "../../src/gen/debvisor/v1/agent_pb.js";
import { createMtlsAuthenticationStage } from "../../src/security/index.js";
import { parseConfig, type RpcServer, startRpcServer } from "../../src/server/index.js";
import type { TestPki } from "./pki.js";

/** Starts the server on 127.0.0.1; `onReceived` counts what the transport received. */
export function startAgentServiceServer(
  pki: TestPki,
  connect: (requests: AsyncIterable<AgentMessage>) => AsyncIterable<ControlMessage>,
  onReceived: () => void = () => {},
): Promise<RpcServer> {
  const config = parseConfig({});
  const service = defineService(
    AgentService,
    {
      connect: { permission: "node:connect", mutating: false, target: { kind: "cluster" } },
      uploadTransfer: { permission: "node:connect", mutating: true },
      downloadTransfer: { permission: "node:connect", mutating: false },
    },
    {
      connect,
      async *uploadTransfer() {},
      async *downloadTransfer() {},
    },
  );
  return startRpcServer({
    listen: "127.0.0.1:0",
    tls: { certPem: pki.server.certPem, keyPem: pki.server.keyPem, clientCaPem: pki.ca.certPem },
    tlsOptions: config.tls,
    limits: config.limits,
    services: [service],
    stages: [createMtlsAuthenticationStage(), validationStage],
    observer: {
      onStart() {},
      onEnd() {},
      onMessage(_ctx, direction) {
        if (direction === "received") onReceived();
      },
    },
    logger: silentLogger,
  });
}

/**
 * What `runAgentLink` needs to reach the server at `address` as the test
 * PKI's client: its files written into `dir`, quick reconnects, no log.
 */
export function linkOptions(pki: TestPki, dir: string, address: string) {
  writeFileSync(join(dir, "ca.pem"), pki.ca.certPem);
  writeFileSync(join(dir, "cert.pem"), pki.client.certPem);
  writeFileSync(join(dir, "key.pem"), pki.client.keyPem);
  return {
    files: {
      dir,
      ca: join(dir, "ca.pem"),
      cert: join(dir, "cert.pem"),
      key: join(dir, "key.pem"),
    },
    servers: [address],
    tlsServerName: "localhost",
    reconnect: { initialMs: 50, maxMs: 200 },
    logger: silentLogger,
  };
}
