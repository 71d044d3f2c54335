// The core layer: transport-neutral types of a call, the error catalogue and
// the pipeline. No I/O and no node: imports; every other layer builds on it.

export { abortError, rethrowAborted, throwIfAborted } from "./abort-error.js";
export { boundedEach } from "./bounded-each.js";
export type {
  AuthMethod,
  CallContext,
  CallScope,
  PeerCertificate,
  PeerInfo,
  Principal,
  RequestHeaders,
} from "./call-context.js";
export { sourceOf } from "./call-context.js";
export type { CallObserver } from "./call-observer.js";
export { serialKey } from "./certificate-serial.js";
export type { Clock, ManualClock } from "./clock.js";
export { createManualClock, monotonicClock, systemClock } from "./clock.js";
export { Code, codeName } from "./code.js";
export { formatBytes } from "./format-bytes.js";
export { handlerCall } from "./handler-call.js";
export type { LabelRequirement, LabelSelector } from "./label-selector.js";
export { isLabelValue, matchesLabels, parseLabelSelector } from "./label-selector.js";
export type { Logger } from "./logger.js";
export { silentLogger } from "./logger.js";
export type {
  MethodAccess,
  MethodKind,
  MethodPolicy,
  MethodSpec,
  ResourceRef,
  TargetDecl,
  TargetKind,
  TargetResolver,
} from "./method-spec.js";
export { nodeKey, sameNode } from "./node-key.js";
export { createOpenedResources, type OpenedResources } from "./opened-resources.js";
export type { Page } from "./paging.js";
export { decodePageToken, encodePageToken, MAX_PAGE_SIZE, paginate } from "./paging.js";
export type { CallResult, Invocation, Next, Stage } from "./pipeline.js";
export {
  composeStages,
  handlerResult,
  mapStream,
  principalOf,
  scopeOf,
  streamsResponses,
  validationStage,
  withPrincipal,
} from "./pipeline.js";
export { attachEncoding, preEncoded } from "./pre-encoded.js";
export type { Reason, ReasonSpec } from "./reasons.js";
export { allReasons, REASONS } from "./reasons.js";
export { createRecencyMap, type RecencyMap } from "./recency-map.js";
export { type RepeatLimits, repeatLimitedLogger } from "./repeat-limited-log.js";
export type { FieldViolation } from "./request-validator.js";
export { validateMessage } from "./request-validator.js";
export type { RpcErrorOptions } from "./rpc-error.js";
export { isRpcErrorWithCode, notImplemented, RpcError, toRpcError } from "./rpc-error.js";
export { runAfter, runAt } from "./run-at.js";
export { sameFieldsExcept, sameValue } from "./same-value.js";
export type {
  AnyHandler,
  BidiStreamHandler,
  BoundMethod,
  ServerStreamHandler,
  ServiceBinding,
  ServiceImpl,
  ServicePolicy,
  UnaryHandler,
} from "./service-binding.js";
export { defineService } from "./service-binding.js";
export {
  assertTenantName,
  decodedTenant,
  encodedTenant,
  isTenantName,
  tenantKeySegment,
} from "./tenant-key.js";
export { type TerminalSafeOptions, terminalSafe } from "./terminal-safe.js";
export { timeoutSignal } from "./timeout-signal.js";
export { msFromTimestamp, timestampFromMs } from "./timestamp.js";
export type { StringRule } from "./validate.js";
export { checkNumber, checkString, ID_HINT, ID_PATTERN, invalid } from "./validate.js";
export { within } from "./within.js";
