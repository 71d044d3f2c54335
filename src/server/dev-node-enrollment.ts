import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  agentFiles,
  createServiceClient,
  enroll,
  openChannel,
  resolveContext,
} from "../client/index.js";
import type { Logger } from "../core/index.js";
import { EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import type { DevEnvironment } from "./dev-environment.js";

/**
 * Dev mode's simulated nodes join like real ones: the admin makes a token
 * for each, and the node enrolls with it over the network, pinning the CA,
 * into DATA_DIR/nodes/<id>/. Nodes already enrolled keep their files.
 */
export async function enrollSimulatedNodes(
  dev: DevEnvironment,
  server: string,
  nodeIds: readonly string[],
  logger: Logger,
): Promise<void> {
  const pending = nodeIds.filter(
    (id) => !existsSync(agentFiles(join(dev.dataDir, "nodes", id)).cert),
  );
  if (pending.length === 0) return;
  const admin = openChannel({ ...resolveContext(dev.contextFile, "dev"), server });
  try {
    const tokens = createServiceClient(EnrollmentService, admin);
    for (const id of pending) {
      const t = await tokens.createEnrollmentToken(
        { nodeName: id, ttlSeconds: 300n },
        { timeoutMs: 10_000 },
      );
      const r = await enroll({
        server,
        token: t.token,
        caFingerprint: t.caFingerprint,
        dir: join(dev.dataDir, "nodes", id),
        tlsServerName: "localhost",
      });
      logger.info({ node: id, serial: r.serial }, "dev mode: simulated node enrolled");
    }
  } finally {
    admin.close();
  }
}
