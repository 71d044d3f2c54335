import { type DescFile, type DescMessage, toBinary } from "@bufbuild/protobuf";
import type { GenFile } from "@bufbuild/protobuf/codegenv2";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { defineService, type ServiceBinding } from "../core/index.js";
import {
  type ServerReflectionRequest,
  ServerReflection as ServerReflectionV1,
} from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** The reflection request and response shapes shared by v1 and v1alpha. */
type RequestCase = ServerReflectionRequest["messageRequest"];

/** Largest number of reflection requests answered on one stream. */
const MAX_REQUESTS_PER_STREAM = 10_000;

/**
 * gRPC server reflection (v1 and v1alpha), so grpcurl and other generic
 * clients can discover the API. It lists only services actually served.
 */
export function createReflectionServices(
  files: readonly GenFile[],
  serviceNames: readonly string[],
): ServiceBinding[] {
  const byName = new Map<string, DescFile>();
  const bySymbol = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (byName.has(`${file.name}.proto`)) return;
    byName.set(`${file.name}.proto`, file);
    for (const dep of file.dependencies) visit(dep);
    const addMessage = (m: DescMessage) => {
      bySymbol.set(m.typeName, file);
      for (const n of m.nestedMessages) addMessage(n);
      for (const e of m.nestedEnums) bySymbol.set(e.typeName, file);
    };
    for (const m of file.messages) addMessage(m);
    for (const e of file.enums) bySymbol.set(e.typeName, file);
    for (const s of file.services) {
      bySymbol.set(s.typeName, file);
      for (const m of s.methods) bySymbol.set(`${s.typeName}.${m.name}`, file);
    }
  };
  for (const f of files) visit(f);
  const services = [...serviceNames].sort();

  const withDeps = (file: DescFile): Uint8Array[] => {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const add = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      for (const d of f.dependencies) add(d);
    };
    add(file);
    return out;
  };

  const answer = (req: RequestCase) => {
    const notFound = (what: string) => ({
      case: "errorResponse" as const,
      value: { errorCode: 5, errorMessage: `${what} not found` },
    });
    switch (req.case) {
      case "listServices":
        return {
          case: "listServicesResponse" as const,
          value: { service: services.map((name) => ({ name })) },
        };
      case "fileByFilename": {
        const file = byName.get(req.value);
        return file === undefined
          ? notFound("file")
          : {
              case: "fileDescriptorResponse" as const,
              value: { fileDescriptorProto: withDeps(file) },
            };
      }
      case "fileContainingSymbol": {
        const file = bySymbol.get(req.value);
        return file === undefined
          ? notFound("symbol")
          : {
              case: "fileDescriptorResponse" as const,
              value: { fileDescriptorProto: withDeps(file) },
            };
      }
      case "fileContainingExtension":
        return notFound("extension");
      case "allExtensionNumbersOfType":
        return bySymbol.has(req.value)
          ? {
              case: "allExtensionNumbersResponse" as const,
              value: { baseTypeName: req.value, extensionNumber: [] },
            }
          : notFound("type");
      default:
        return {
          case: "errorResponse" as const,
          value: { errorCode: 3, errorMessage: "empty request" },
        };
    }
  };

  // biome-ignore lint/suspicious/noExplicitAny: v1 and v1alpha messages differ only in their type names.
  const handler = async function* (requests: AsyncIterable<any>): AsyncIterable<any> {
    let count = 0;
    for await (const req of requests) {
      if (++count > MAX_REQUESTS_PER_STREAM) return;
      yield {
        validHost: req.host,
        originalRequest: req,
        messageResponse: answer(req.messageRequest),
      };
    }
  };
  const policy = { serverReflectionInfo: { permission: null, mutating: false } };
  return [
    defineService(ServerReflectionV1, policy, { serverReflectionInfo: handler }),
    defineService(ServerReflectionV1Alpha, policy, { serverReflectionInfo: handler }),
  ];
}
