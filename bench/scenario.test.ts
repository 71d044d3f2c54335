import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeCommand, h2loadArgs } from "./scenario.js";

describe("the load command a scenario states", () => {
  it("is the exact h2load line with the secret, the body file and the port replaced", () => {
    const token = "dvk_0123456789abcdef_secretsecretsecretsecretsecretsecretsecret0";
    const args = h2loadArgs({
      address: "127.0.0.1:40123",
      path: "/debvisor.v1.NodeService/ListNodes",
      bearer: token,
      bodyFile: "/tmp/dv-bench-x/listnodes.bin",
      calls: 20000,
      clients: 8,
      streams: 10,
      extra: ["--rps", "50"],
    });
    const line = describeCommand("h2load", args, {
      [token]: "<API key>",
      "/tmp/dv-bench-x/listnodes.bin": "<empty request frame>",
    });
    assert.equal(
      line,
      "h2load -n 20000 -c 8 -m 10 --rps 50 -H 'content-type: application/grpc' -H 'te: trailers' -H 'authorization: Bearer <API key>' -d '<empty request frame>' https://127.0.0.1:PORT/debvisor.v1.NodeService/ListNodes",
    );
    assert.ok(!line.includes("secret"));
  });
});
