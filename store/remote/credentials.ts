/**
 * Registry credentials and where they come from.
 *
 * Sources, first match wins (resolveCredentials):
 *   1. STRATA_REGISTRY_AUTH, applied to every registry:
 *        "user:password"   Basic credentials (split at the first ':'; a user name has no ':'),
 *                          used for Basic challenges and to ask a Bearer token realm for a token;
 *        "bearer:TOKEN"    a ready-made token sent as `Authorization: Bearer TOKEN` (no token
 *                          exchange); the literal prefix "bearer:" always means this.
 *      An empty value counts as unset.
 *   2. The Docker client config, $DOCKER_CONFIG/config.json else ~/.docker/config.json:
 *        { "auths": { "<host>": { "auth": base64("user:password") } } }
 *      (or "username" and "password" fields). Keys may carry a scheme or path
 *      ("https://host/v1/"); Docker Hub's key "https://index.docker.io/v1/" serves docker.io,
 *      index.docker.io and registry-1.docker.io. `credsStore`/`credHelpers` and
 *      `identitytoken` entries are not used.
 *   3. None: anonymous.
 *
 * Secrets never leak by accident: the password and token are non-enumerable, so
 * JSON.stringify() and util.inspect() of a Credentials object show neither, and no error
 * message built here contains them (or the raw variable / file content).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { StrataError, STORE_ERR } from '../errors.js';

export interface BasicCredentials {
  readonly kind: 'basic';
  readonly username: string;
  readonly password: string;
}
export interface BearerCredentials {
  readonly kind: 'bearer';
  readonly token: string;
}
export type Credentials = BasicCredentials | BearerCredentials;

function hide<T extends object>(obj: T, key: string, value: string): T {
  Object.defineProperty(obj, key, { value, enumerable: false });
  Object.defineProperty(obj, inspect.custom, {
    value: () => `Credentials(${(obj as { kind: string }).kind}, <redacted>)`,
    enumerable: false,
  });
  return obj;
}

/** Basic credentials whose password does not show in JSON or inspect output. */
export function basicCredentials(username: string, password: string): BasicCredentials {
  return hide({ kind: 'basic', username } as BasicCredentials, 'password', password);
}

/** A ready-made bearer token that does not show in JSON or inspect output. */
export function bearerCredentials(token: string): BearerCredentials {
  return hide({ kind: 'bearer' } as BearerCredentials, 'token', token);
}

/** Parses the STRATA_REGISTRY_AUTH format (see the file comment). Throws ERR_REGISTRY_CONFIG. */
export function parseAuthValue(value: string): Credentials {
  if (value.startsWith('bearer:')) {
    const token = value.slice('bearer:'.length);
    if (token !== '') return bearerCredentials(token);
  } else {
    const i = value.indexOf(':');
    if (i > 0) return basicCredentials(value.slice(0, i), value.slice(i + 1));
  }
  throw new StrataError(STORE_ERR.REGISTRY_CONFIG, 'STRATA_REGISTRY_AUTH is not in a known form', {
    hint: 'set it to user:password or bearer:TOKEN',
  });
}

const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** Host (with port) of a config key: "https://host:5000/v1/" → "host:5000", lowercase. */
function keyHost(key: string): string {
  return key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

export interface ResolveOptions {
  /** Environment to read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Home directory (default os.homedir()). */
  home?: string;
}

/**
 * Credentials for `registryHost` ("host" or "host:port", as in the registry URL), or null for
 * anonymous access. Throws ERR_REGISTRY_CONFIG when STRATA_REGISTRY_AUTH or the Docker config cannot be
 * parsed (naming the variable or file, never its content).
 */
export function resolveCredentials(registryHost: string, opts: ResolveOptions = {}): Credentials | null {
  const env = opts.env ?? process.env;
  const fromEnv = env.STRATA_REGISTRY_AUTH;
  if (fromEnv !== undefined && fromEnv !== '') return parseAuthValue(fromEnv);

  const dir = env.DOCKER_CONFIG || join(opts.home ?? homedir(), '.docker');
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  let auths: Record<string, { auth?: unknown; username?: unknown; password?: unknown }>;
  try {
    const cfg = JSON.parse(text) as { auths?: unknown };
    auths = (cfg && typeof cfg.auths === 'object' && cfg.auths !== null ? cfg.auths : {}) as typeof auths;
  } catch {
    throw new StrataError(STORE_ERR.REGISTRY_CONFIG, `cannot parse ${file}`, { hint: 'fix the JSON or run docker login again' });
  }
  const want = registryHost.toLowerCase();
  const wanted = DOCKER_HUB.includes(want) ? DOCKER_HUB : [want];
  for (const [key, entry] of Object.entries(auths)) {
    if (!wanted.includes(keyHost(key)) || !entry || typeof entry !== 'object') continue;
    if (typeof entry.auth === 'string' && entry.auth !== '') {
      const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
      const i = plain.indexOf(':');
      if (i <= 0) {
        throw new StrataError(STORE_ERR.REGISTRY_CONFIG, `the auth entry for ${registryHost} in ${file} is not base64 user:password`, {
          hint: `run docker login ${registryHost} again`,
        });
      }
      return basicCredentials(plain.slice(0, i), plain.slice(i + 1));
    }
    if (typeof entry.username === 'string' && typeof entry.password === 'string') {
      return basicCredentials(entry.username, entry.password);
    }
  }
  return null;
}
