import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "./config-loader.js";

function file(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "dv-cfg-"));
  const p = join(dir, "rpcd.yaml");
  writeFileSync(p, text);
  return p;
}

const fails = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof ConfigError && pattern.test(e.message));

describe("loadConfig", () => {
  it("gives production defaults with nothing configured", () => {
    const c = loadConfig({ configPath: file(""), env: {} });
    assert.equal(c.listen, "127.0.0.1:7443");
    assert.equal(c.tls.minVersion, "TLSv1.3");
    assert.equal(c.limits.maxRequestBytes, 1024 * 1024);
    assert.equal(c.limits.maxResponseBytes, 10 * 1024 * 1024);
    assert.equal(c.metrics.listen, "127.0.0.1:9464");
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.limits));
  });

  it("rejects an unknown key and names its full path", () => {
    fails(
      () => loadConfig({ configPath: file("limits:\n  maxRequestByts: 5\n"), env: {} }),
      /^limits\.maxRequestByts: unknown key$/m,
    );
    fails(
      () => loadConfig({ configPath: file("listn: 1.2.3.4:1\n"), env: {} }),
      /^listn: unknown key$/m,
    );
  });

  it("names the path of a value out of range", () => {
    fails(
      () => loadConfig({ configPath: file("limits:\n  maxRequestBytes: 10\n"), env: {} }),
      /^limits\.maxRequestBytes: /m,
    );
    fails(
      () => loadConfig({ configPath: file("listen: nowhere\n"), env: {} }),
      /^listen: must be HOST:PORT/m,
    );
  });

  it("maps the existing RPC_* environment variables onto the schema", () => {
    const c = loadConfig({
      configPath: file(""),
      env: {
        RPC_TLS_CERT: "/c.pem",
        RPC_TLS_KEY: "/k.pem",
        RPC_TLS_CA: "/ca.pem",
        RPC_LOG_LEVEL: "WARNING",
        RPC_AUDIT_LOG: "/a.log",
      },
    });
    assert.deepEqual(
      [c.tls.cert, c.tls.key, c.tls.clientCa, c.log.level, c.audit.path],
      ["/c.pem", "/k.pem", "/ca.pem", "warn", "/a.log"],
    );
  });

  it("lets the environment override the file and flags override both", () => {
    const p = file("log:\n  level: debug\nlisten: 127.0.0.1:1000\n");
    assert.equal(loadConfig({ configPath: p, env: { RPC_LOG_LEVEL: "error" } }).log.level, "error");
    const c = loadConfig({ configPath: p, env: {}, overrides: { listen: "127.0.0.1:2000" } });
    assert.equal(c.listen, "127.0.0.1:2000");
    assert.equal(c.log.level, "debug");
  });

  it("fails when a named config file is missing, but not when the default one is", () => {
    fails(
      () => loadConfig({ configPath: "/nonexistent/rpcd.yaml", env: {} }),
      /file not found: \/nonexistent\/rpcd\.yaml/,
    );
  });

  it("rejects a file that is not a mapping", () => {
    fails(() => loadConfig({ configPath: file("- a\n- b\n"), env: {} }), /must be a mapping/);
    fails(() => loadConfig({ configPath: file("a: [\n"), env: {} }), /not valid YAML/);
  });
});
