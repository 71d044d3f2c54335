import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ContextFileError } from "../client/index.js";
import { CallError, describeFailure, EXIT, streamBreak, UsageError } from "./cli-errors.js";

/** A failed call as grpc-js reports it, with the trailers the server sends. */
function failed(
  method: string,
  code: grpc.status,
  details: string,
  trailers: Record<string, string> = {},
) {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(trailers)) metadata.set(k, v);
  return new CallError(method, { code, details, metadata });
}

const served = (reason: string) => ({ "x-request-id": "req-1", "debvisor-error-reason": reason });

describe("describeFailure", () => {
  it("names the missing permission, the code and the request id", () => {
    const f = describeFailure(
      failed(
        "/debvisor.v1.MigrationService/MigrateVM",
        7,
        "permission denied",
        served("PERMISSION_DENIED"),
      ),
    );
    assert.equal(
      f.message,
      "permission denied: you need migration:execute (PERMISSION_DENIED, request req-1)",
    );
    assert.equal(f.exitCode, EXIT.permissionDenied);
  });

  for (const [name, code, reason, exit] of [
    ["fail-unauthenticated", 16, "UNAUTHENTICATED", EXIT.unauthenticated],
    ["fail-not-found", 5, "NODE_NOT_FOUND", EXIT.notFound],
    ["fail-invalid-argument", 3, "INVALID_ARGUMENT", EXIT.usage],
    ["fail-unavailable", 14, "AUDIT_UNAVAILABLE", EXIT.unavailable],
    ["fail-precondition", 9, "ROLE_PROTECTED", EXIT.other],
    ["fail-rate-limited", 8, "RATE_LIMITED", EXIT.other],
  ] as const)
    it(`${name}: exit code ${exit}`, () => {
      assert.equal(
        describeFailure(failed("/debvisor.v1.NodeService/GetNode", code, "x", served(reason)))
          .exitCode,
        exit,
      );
    });

  it("says what to do about a request id used for another operation", () => {
    const f = describeFailure(
      failed(
        "/debvisor.v1.VmService/StartVm",
        3,
        'request_id "k1" was already used for a stop of vm-1',
        served("INVALID_ARGUMENT"),
      ),
    );
    assert.equal(
      f.message,
      'request_id "k1" was already used for a stop of vm-1: pick another --request-id, or leave it out (hvctl makes one) (INVALID_ARGUMENT, request req-1)',
    );
  });

  it("names why a stream broke in a few words, not grpc-js's whole note", () => {
    assert.equal(
      streamBreak(
        failed(
          "/debvisor.v1.WatchService/WatchVms",
          14,
          "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7443. Resolution note: ",
        ),
      ),
      "connect ECONNREFUSED 127.0.0.1:7443",
    );
  });

  it("says when to retry a rate-limited call", () => {
    const f = describeFailure(
      failed("/debvisor.v1.NodeService/ListNodes", 8, "rate limit exceeded", {
        ...served("RATE_LIMITED"),
        "retry-after-ms": "2500",
      }),
    );
    assert.equal(f.message, "rate limit exceeded: retry in 3s (RESOURCE_EXHAUSTED, request req-1)");
  });

  for (const [name, details, cause] of [
    [
      "refused",
      "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ",
      /nothing is listening there/,
    ],
    [
      "another name",
      "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: Host: other.example. is not in the cert's altnames: DNS:localhost. Resolution note: ",
      /certificate is for another name \(DNS:localhost\)/,
    ],
    [
      "unknown CA",
      "No connection established. Last error: Error: self-signed certificate in certificate chain. Resolution note: ",
      /not signed by the context's CA \(unknown CA\)/,
    ],
    [
      "expired",
      "No connection established. Last error: Error: certificate has expired. Resolution note: ",
      /certificate has expired/,
    ],
    [
      "not TLS",
      "No connection established. Last error: Error: write EPROTO 00000000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number. Resolution note: ",
      /does not speak TLS/,
    ],
  ] as const)
    it(`names the likely cause of a connection failure: ${name}`, () => {
      const f = describeFailure(failed("/debvisor.v1.NodeService/ListNodes", 14, details), {
        server: "127.0.0.1:7443",
      });
      assert.match(f.message, cause);
      assert.match(f.message, /\(UNAVAILABLE\)$/);
      assert.equal(f.exitCode, EXIT.unavailable);
    });

  it("names the revoked certificate a server presented, whatever grpc-js made of it", () => {
    const f = describeFailure(
      failed(
        "/debvisor.v1.NodeService/ListNodes",
        14,
        "No connection established. Last error: Error: something else. Resolution note: ",
      ),
      { server: "127.0.0.1:7443", revokedServer: "3fa2" },
    );
    assert.match(
      f.message,
      /^the control plane's certificate 3fa2 is revoked: 127\.0\.0\.1:7443 presented it, so nothing was sent there; .* \(UNAVAILABLE\)$/,
    );
    assert.equal(f.exitCode, EXIT.unavailable);
  });

  it("tells an expired client certificate from a revoked one", async () => {
    const { createCertificateAuthority, loadCertificateAuthority } = await import(
      "../pki/index.js"
    );
    const ca = await createCertificateAuthority({ commonName: "CA" });
    const old = await (await loadCertificateAuthority(ca)).issue({
      commonName: "alice",
      usage: "client",
      validityDays: 1,
      now: new Date(Date.now() - 5 * 86_400_000),
    });
    const f = describeFailure(
      failed(
        "/debvisor.v1.AccessService/WhoAmI",
        16,
        "authentication required",
        served("UNAUTHENTICATED"),
      ),
      {
        context: "alice",
        credential: "mtls",
        certPem: old.certPem,
        caPem: ca.certPem,
      },
    );
    assert.match(
      f.message,
      /^authentication required: the client certificate of context "alice" expired /,
    );
  });

  it("gives usage and configuration errors exit code 2, anything else 1", () => {
    assert.equal(describeFailure(new UsageError("--ttl: bad")).exitCode, EXIT.usage);
    assert.equal(describeFailure(new ContextFileError("x: no context")).exitCode, EXIT.usage);
    assert.equal(describeFailure(new Error("boom")).exitCode, EXIT.other);
  });
});
