import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkContextFile } from "./context-schema.js";

const ctx = (over: Record<string, unknown> = {}) => ({
  name: "dev",
  server: "127.0.0.1:7443",
  ca: "ca.crt",
  credential: { apiKeyFile: "k" },
  ...over,
});
const file = (contexts: unknown[], over: Record<string, unknown> = {}) => ({
  apiVersion: "debvisor.io/v1",
  kind: "HvctlConfig",
  contexts,
  ...over,
});

describe("checkContextFile", () => {
  for (const [name, doc] of [
    ["ok-api-key-file", file([ctx()], { currentContext: "dev" })],
    ["ok-client-cert", file([ctx({ credential: { clientCert: "c", clientKey: "k" } })])],
    ["ok-token-command", file([ctx({ credential: { tokenCommand: ["vault", "read"] } })])],
    ["ok-ipv6-server", file([ctx({ server: "[::1]:7443", tlsServerName: "localhost" })])],
    ["ok-no-contexts", file([])],
    ["ok-revoked-servers-file", file([ctx()], { revokedServersFile: "state/revoked.json" })],
  ] as const)
    it(`accepts ${name}`, () => assert.ok("file" in checkContextFile(doc)));

  for (const [name, doc, path, message] of [
    ["fail-not-an-object", "x", "", /object/],
    ["fail-kind", file([], { kind: "Other" }), "kind", /HvctlConfig/],
    ["fail-unknown-key", file([], { extra: 1 }), "", /unrecognized key: "extra"/],
    ["fail-server", file([ctx({ server: "nohost" })]), "contexts.0.server", /HOST:PORT/],
    [
      "fail-empty-revoked-servers-file",
      file([], { revokedServersFile: "" }),
      "revokedServersFile",
      /at least 1/,
    ],
    ["fail-empty-name", file([ctx({ name: "" })]), "contexts.0.name", /at least 1/],
    [
      "fail-two-credentials",
      file([ctx({ credential: { apiKey: "a", tokenFile: "t" } })]),
      "contexts.0.credential",
      /exactly one/,
    ],
    [
      "fail-cert-without-key",
      file([ctx({ credential: { clientCert: "c" } })]),
      "contexts.0.credential",
      /exactly one/,
    ],
    [
      "fail-empty-token-command",
      file([ctx({ credential: { tokenCommand: [] } })]),
      "contexts.0.credential.tokenCommand",
      /1 to 64/,
    ],
    [
      "fail-long-api-key",
      file([ctx({ credential: { apiKey: "k".repeat(1025) } })]),
      "contexts.0.credential.apiKey",
      /at most 1024/,
    ],
    [
      "fail-unknown-context-key",
      file([ctx({ insecure: true })]),
      "contexts.0",
      /unrecognized key: "insecure"/,
    ],
  ] as const)
    it(`refuses ${name}, naming ${path || "the document"}`, () => {
      const r = checkContextFile(doc);
      assert.ok("problem" in r, "accepted");
      assert.equal(r.problem.path, path);
      assert.match(r.problem.message, message);
    });
});
