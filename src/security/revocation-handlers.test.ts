import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { handlerCall, RpcError, silentLogger, systemClock } from "../core/index.js";
import type { ListRevokedServerCertificatesResponse } from "../gen/debvisor/v1/pki_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createAccessPolicy } from "./access-evaluator.js";
import { createEnrollmentService } from "./enrollment-service.js";

describe("ListRevokedServerCertificates", () => {
  const listed = (current: () => readonly string[] | undefined) => {
    const dir = mkdtempSync(join(tmpdir(), "dv-revoked-list-"));
    const store = createSqliteStore({ path: join(dir, "s.db"), logger: silentLogger });
    const service = createEnrollmentService({
      store,
      clock: systemClock,
      ca: undefined,
      revocations: undefined as never,
      revokedServers: { current },
      bindings: undefined as never,
      policy: () => createAccessPolicy({}),
      lockout: undefined as never,
    });
    return handlerCall<ListRevokedServerCertificatesResponse>(
      service,
      "ListRevokedServerCertificates",
    )({}).finally(() => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    });
  };

  it("answers the list agents are told, in its order", async () => {
    const r = await listed(() => ["b2", "a1"]);
    assert.deepEqual(r.serials, ["b2", "a1"]);
  });

  it("answers UNAVAILABLE REVOKED_SERVERS_NOT_READY, not an empty list, before it was read", async () => {
    await assert.rejects(
      listed(() => undefined),
      (err) => err instanceof RpcError && err.reason === "REVOKED_SERVERS_NOT_READY",
    );
  });
});
