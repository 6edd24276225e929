/**
 * User and group names of this host, looked up through NSS (getpwnam_r / getgrnam_r in the
 * native addon), so /etc/passwd, LDAP and sssd users all resolve as `ls -l` would.
 * Used to turn the names in GNU tar ACL text into ids at ingest time.
 */
import { addon } from './binding.js';
import type { IdResolver } from './acl.js';

/** uid of `name` on this host, or undefined when NSS does not know it. */
export function lookupUser(name: string): number | undefined {
  return addon().getpwnam(name);
}

/** gid of `name` on this host, or undefined when NSS does not know it. */
export function lookupGroup(name: string): number | undefined {
  return addon().getgrnam(name);
}

/**
 * An IdResolver over this host's NSS with a per-resolver cache (a tar names the same few
 * users thousands of times). Create one per ingest so a long-lived process sees changes.
 */
export function hostResolver(): IdResolver {
  const users = new Map<string, number | undefined>();
  const groups = new Map<string, number | undefined>();
  const cached = (cache: Map<string, number | undefined>, look: (n: string) => number | undefined) => (name: string) => {
    if (!cache.has(name)) cache.set(name, look(name));
    return cache.get(name);
  };
  return { user: cached(users, lookupUser), group: cached(groups, lookupGroup) };
}
