// The security layer: who is calling (mTLS, JWT, API keys, lockout) and what
// they may do (roles, bindings, tenants), as pipeline stages.

export type { AccessPolicy, Binding, Decision, TargetFacts } from "./access-evaluator.js";
export {
  assertCanActAs,
  assertCanGrant,
  bindingsOf,
  createAccessPolicy,
  decide,
  decideIn,
  rolesIn,
  rolesOf,
  tenantsOf,
} from "./access-evaluator.js";
export type { AccessServiceDeps } from "./access-service.js";
export { apiKeyResolver, createAccessService } from "./access-service.js";
export { API_KEY_MIRROR_MAX_STALE_MS } from "./api-key-records.js";
export type { ApiKeyFailure, ApiKeys, IssuedApiKey, NewApiKey } from "./api-keys.js";
export { createApiKeys, loadApiKeys } from "./api-keys.js";
export type { AuthenticationOptions } from "./authentication-stage.js";
export { createAuthenticationStage, sourceOf } from "./authentication-stage.js";
export type { TargetResolvers } from "./authorization-stage.js";
export { createAuthorizationStage } from "./authorization-stage.js";
export { caFingerprint } from "./certificate-info.js";
export type { CertificateLedger, Issuance } from "./certificate-ledger.js";
export { createCertificateLedger } from "./certificate-ledger.js";
export type { EnrollmentServiceDeps } from "./enrollment-service.js";
export { createEnrollmentService } from "./enrollment-service.js";
export type { JwtAlgorithm, JwtIdentity, JwtIssuer, JwtVerifier } from "./jwt-verifier.js";
export { createJwtVerifier, JWT_ALGORITHMS, looksLikeJwt } from "./jwt-verifier.js";
export type { Lockout, LockoutOptions } from "./lockout.js";
export { createLockout } from "./lockout.js";
export { createMtlsAuthenticationStage } from "./mtls-authentication-stage.js";
export { nodeNamed } from "./node-named.js";
export { grantsCover, isGrant, isPermission, permissionMatches } from "./permission.js";
export { jwtPrincipal } from "./principal-names.js";
export type { RateLimitOptions } from "./rate-limit-stages.js";
export { createRateLimitStages } from "./rate-limit-stages.js";
export type { BucketLimit, RateLimiter, Take } from "./rate-limiter.js";
export { createRateLimiter } from "./rate-limiter.js";
export type { Revocations } from "./revocations.js";
export { loadRevocations, normalizeSerial } from "./revocations.js";
export type { RevokedServerCertificates } from "./revoked-server-certificates.js";
export {
  followRevokedServerCertificates,
  MAX_REVOKED_SERVER_CERTIFICATES,
} from "./revoked-server-certificates.js";
export type { Role } from "./roles.js";
export { BUILT_IN_ROLES, SELF_ONLY_ROLES } from "./roles.js";
export { sourceGroupOf } from "./source-group.js";
export type { StoredBindings } from "./stored-bindings.js";
export { loadStoredBindings } from "./stored-bindings.js";
export type { StoredRoles } from "./stored-roles.js";
export { loadStoredRoles } from "./stored-roles.js";
