import type { Clock } from "../core/index.js";
import {
  type PanelUserRecord,
  PanelUserRecordSchema,
} from "../gen/debvisor/store/v1/panel_records_pb.js";
import {
  decodeMessage,
  encodeMessage,
  getMessage,
  type KvStore,
  rangeAll,
} from "../store/index.js";
import { hashPassword, MAX_PASSWORD_LENGTH } from "./password-hashing.js";

const PREFIX = "panel/users/";
/** User names: the principal is `user:<name>`, so they follow the id rule of principals. */
export const USER_NAME = /^[a-z][a-z0-9._-]{0,62}$/;
/** Shortest password accepted for a panel user. */
export const MIN_PASSWORD_LENGTH = 12;

/** The principal a panel user acts as. */
export function userPrincipal(name: string): string {
  return `user:${name}`;
}

/** What is wrong with a new user's name or password, or undefined. */
export function checkCredentials(name: string, password: string): string | undefined {
  if (!USER_NAME.test(name)) return "user: lower-case letters, digits, . _ -; at most 63";
  if (password.length < MIN_PASSWORD_LENGTH)
    return `password: at least ${MIN_PASSWORD_LENGTH} characters`;
  if (password.length > MAX_PASSWORD_LENGTH)
    return `password: at most ${MAX_PASSWORD_LENGTH} characters`;
  return undefined;
}

/** Local panel users, kept in the store. */
export interface PanelUsers {
  get(name: string): Promise<PanelUserRecord | undefined>;
  list(): Promise<PanelUserRecord[]>;
  /**
   * Creates the user or replaces its password (enabling it). Check input with
   * {@link checkCredentials} first. `generated`: a random secret the daemon
   * made (hashed with cheaper parameters).
   */
  setPassword(name: string, password: string, by: string, generated?: boolean): Promise<void>;
  /** Disables the user; its sessions are ended by the caller. False when there is no such user. */
  disable(name: string): Promise<boolean>;
}

/** Creates the panel's user directory over the store. */
export function createPanelUsers(store: KvStore, clock: Clock): PanelUsers {
  const key = (name: string) => `${PREFIX}${name}`;
  return {
    async get(name) {
      if (!USER_NAME.test(name)) return undefined;
      return (await getMessage(store, PanelUserRecordSchema, key(name)))?.message;
    },
    async list() {
      const out: PanelUserRecord[] = [];
      for await (const kv of rangeAll(store, PREFIX))
        out.push(decodeMessage(PanelUserRecordSchema, kv));
      return out;
    },
    async setPassword(name, password, by, generated = false) {
      const problem = checkCredentials(name, password);
      if (problem !== undefined) throw new TypeError(problem);
      const old = await this.get(name);
      await store.put(
        key(name),
        encodeMessage(PanelUserRecordSchema, {
          name,
          passwordHash: await hashPassword(password, generated),
          disabled: false,
          createdBy: old?.createdBy ?? by,
          createdAtMs: old === undefined ? BigInt(clock.now()) : old.createdAtMs,
        }),
      );
    },
    async disable(name) {
      const old = await this.get(name);
      if (old === undefined) return false;
      await store.put(key(name), encodeMessage(PanelUserRecordSchema, { ...old, disabled: true }));
      return true;
    },
  };
}
