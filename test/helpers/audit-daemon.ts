import { readFileSync } from "node:fs";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { openChannel, resolveContext } from "../../src/client/index.js";
import { NodeInfoSchema } from "../../src/gen/debvisor/v1/node_pb.js";
import { devDaemonArgs } from "./daemon-process.js";

/** What the audit tests call and how they start and read a dev daemon's trail. */
export const REGISTER = "/debvisor.v1.NodeService/RegisterNode";
export const GET_NODE = "/debvisor.v1.NodeService/GetNode";
export const DRAIN = "/debvisor.v1.NodeService/DrainNode";

/** A dev daemon's arguments on free loopback ports, with `extra`. */
export const devArgs = (dir: string, ...extra: string[]) => [...devDaemonArgs(dir), ...extra];

/** A RegisterNode request for node `id`, encoded. */
export const register = (id: string) =>
  Buffer.from(
    toBinary(NodeInfoSchema, create(NodeInfoSchema, { id: { id }, hostname: `${id}.example` })),
  );

/** The records of an audit log file. */
export const records = (path: string) =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, string | number>);

/** The dev admin's channel to a daemon at `address`. */
export function adminChannel(dir: string, address: string): grpc.Client {
  const ctx = resolveContext(join(dir, "hvctl.yaml"), "dev");
  return openChannel({ ...ctx, server: address });
}
