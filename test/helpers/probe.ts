/**
 * Capability probes: a suite whose tool or privilege is missing is skipped with a printed
 * reason, never failed with a spawn ENOENT trace, and never skipped by sniffing the platform.
 *
 *   const why = missing({ tools: ['docker-registry', 'skopeo'], root: true });
 *   if (why) skipSuite('registry round trip', why); else { …the suite… }
 */
import { spawnSync } from 'node:child_process';
import { suite, type Test } from 'uvu';

export interface Needs {
  /** Programs that must be on PATH. */
  tools?: string[];
  /** The suite needs root (chown, mounts, setpriv to other users). */
  root?: boolean;
  /** A probe of its own: returns why it cannot run, or undefined. */
  check?: () => string | undefined;
}

export function onPath(tool: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', tool], { stdio: 'ignore' }).status === 0;
}

/** Why a suite with these needs cannot run here, or undefined when it can. */
export function missing(needs: Needs): string | undefined {
  const absent = (needs.tools ?? []).filter((t) => !onPath(t));
  if (absent.length > 0) return `${absent.join(', ')} not installed`;
  if (needs.root && process.getuid?.() !== 0) return 'needs root';
  return needs.check?.();
}

/** Reports a suite as skipped (one skipped test, so the runner counts it) and prints why. */
export function skipSuite(name: string, why: string): void {
  process.stdout.write(`skip: ${name}: ${why}\n`);
  const s = suite(name);
  s.skip(`skipped: ${why}`, () => undefined);
  s.run();
}

/**
 * A test that runs only where `needs` are met; elsewhere it is registered as skipped (so the
 * runner counts it) and the reason is printed, while the rest of its suite runs.
 */
export function testIf<T>(test: Test<T>, needs: Needs, name: string, fn: (ctx: T) => void | Promise<void>): void {
  const why = missing(needs);
  if (why === undefined) {
    test(name, fn);
    return;
  }
  process.stdout.write(`skip: ${name}: ${why}\n`);
  test.skip(`${name} (skipped: ${why})`, () => undefined);
}
