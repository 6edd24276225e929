/**
 * Registry credentials and where they come from. A credential belongs to one registry host
 * and is looked up for, and sent to, that host only (as Docker's config.json is per host):
 * a registry never receives the credentials of another.
 *
 * Sources for host H (`host` or `host:port`, exactly as in the registry URL, any case), first
 * match wins (resolveCredentials):
 *   1. STRATA_REGISTRY_AUTH: entries separated by white space, each `H=SECRET`:
 *        127.0.0.1:5000=alice:s3cret registry.example.org=bearer:eyJ…
 *      SECRET is "user:password" (Basic; split at the first ':', so a user name has no ':'),
 *      used for Basic challenges and to ask the registry's own token service for a token; or
 *      "bearer:TOKEN", sent as `Authorization: Bearer TOKEN` (no token exchange). A secret with
 *      white space in it belongs in the file (2). An entry without `H=` (the old, unscoped
 *      `user:password`) is refused: it would go to whatever registry asks. Empty = unset.
 *   2. STRATA_REGISTRY_AUTH_FILE: a file of such entries, one per line, the secret running to
 *      the end of the line (spaces allowed); blank lines and lines starting with '#' skipped.
 *   3. The Docker client config, $DOCKER_CONFIG/config.json else ~/.docker/config.json:
 *        { "auths": { "<host>": { "auth": base64("user:password") } } }
 *      (or "username" and "password" fields). Keys may carry a scheme or path
 *      ("https://host/v1/"); Docker Hub's key "https://index.docker.io/v1/" serves docker.io,
 *      index.docker.io and registry-1.docker.io. `credsStore`/`credHelpers` and
 *      `identitytoken` entries are not used.
 *   4. None: anonymous.
 * Within one source the first entry for a host is used.
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

/**
 * Parses one SECRET, `user:password` or `bearer:TOKEN`. Throws ERR_REGISTRY_CONFIG naming
 * `source` (never the value).
 */
export function parseAuthValue(value: string, source = 'STRATA_REGISTRY_AUTH'): Credentials {
  if (value.startsWith('bearer:')) {
    const token = value.slice('bearer:'.length);
    if (token !== '' && !/[\r\n]/.test(token)) return bearerCredentials(token);
  } else {
    const i = value.indexOf(':');
    if (i > 0 && !/[\r\n]/.test(value)) return basicCredentials(value.slice(0, i), value.slice(i + 1));
  }
  throw new StrataError(STORE_ERR.REGISTRY_CONFIG, `${source} is not in a known form`, {
    hint: 'write HOST=user:password or HOST=bearer:TOKEN, e.g. registry.example.org=alice:secret',
  });
}

const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * Parses host-scoped entries (`HOST=SECRET`, see the file comment) into a map from lowercase
 * host to credentials; the first entry for a host wins. `lines`: one entry per line (the
 * file form, secrets may hold spaces) instead of white-space separated. Throws
 * ERR_REGISTRY_CONFIG naming `source` and the entry's position, never its content.
 */
export function parseAuthEntries(text: string, source: string, lines = false): Map<string, Credentials> {
  const out = new Map<string, Credentials>();
  const entries = lines
    ? text.split('\n').map((l) => l.replace(/\r$/, '')).map((l, i) => [l.trim() === '' || l.trimStart().startsWith('#') ? '' : l.trim(), `line ${i + 1}`] as const)
    : text.split(/\s+/).map((e, i) => [e, `entry ${i + 1}`] as const);
  for (const [entry, where] of entries) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    const host = eq > 0 ? entry.slice(0, eq) : '';
    if (!HOST_RE.test(host)) {
      throw new StrataError(STORE_ERR.REGISTRY_CONFIG, `${source} (${where}) names no registry host`, {
        hint: 'credentials go only to the host they are for: write HOST=user:password or HOST=bearer:TOKEN, e.g. registry.example.org=alice:secret',
      });
    }
    const creds = parseAuthValue(entry.slice(eq + 1), `${source} (${where})`);
    if (!out.has(host.toLowerCase())) out.set(host.toLowerCase(), creds);
  }
  return out;
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
  const want = registryHost.toLowerCase();
  const wanted = DOCKER_HUB.includes(want) ? DOCKER_HUB : [want];
  const pick = (m: Map<string, Credentials>) => wanted.map((h) => m.get(h)).find((c) => c !== undefined);
  const fromEnv = env.STRATA_REGISTRY_AUTH;
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    const c = pick(parseAuthEntries(fromEnv, 'STRATA_REGISTRY_AUTH'));
    if (c) return c;
  }
  const authFile = env.STRATA_REGISTRY_AUTH_FILE;
  if (authFile !== undefined && authFile !== '') {
    let text: string;
    try {
      text = readFileSync(authFile, 'utf8');
    } catch (e) {
      throw new StrataError(STORE_ERR.REGISTRY_CONFIG, `cannot read STRATA_REGISTRY_AUTH_FILE ${authFile}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, {
        hint: 'point it at a readable file of HOST=user:password lines, or unset it',
      });
    }
    const c = pick(parseAuthEntries(text, authFile, true));
    if (c) return c;
  }

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
