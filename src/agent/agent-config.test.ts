import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { loadAgentConfig } from "./agent-config.js";

const load = (migrationUri: string) =>
  loadAgentConfig({
    configPath: undefined,
    env: {},
    flags: { dir: "/var/lib/debvisor-agent", driver: { migrationUri } },
  });

describe("agent configuration: the migration URI this node reports", () => {
  it("refuses at start-up a URI that would make a source node run a program or check less", () => {
    assert.throws(
      () => load("qemu+ext:///system?command=/usr/local/bin/x"),
      /driver\.migrationUri: the ext transport is not allowed/,
    );
    assert.throws(
      () => load("qemu+tls://hv02/system?no_verify=1"),
      /driver\.migrationUri: the parameter no_verify is not allowed/,
    );
  });

  it("takes the URIs other nodes' libvirtd use to reach this one", () => {
    for (const uri of [
      "qemu+tls://hv02.example/system",
      "qemu+ssh://root@hv02/system?keyfile=/etc/debvisor/id",
    ])
      assert.equal(load(uri).driver.migrationUri, uri);
  });
});
