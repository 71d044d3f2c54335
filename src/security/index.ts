// The security layer: authentication and authorization stages of the pipeline.
export { createMtlsAuthenticationStage } from "./mtls-authentication-stage.js";
