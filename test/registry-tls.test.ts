/**
 * A registry over HTTPS whose certificate only NODE_EXTRA_CA_CERTS vouches for (a throw-away
 * CA on loopback), reached through the `strata` command users run (cli/strata). The launcher
 * keeps the variable from Node's start, which it slows for every command; the registry client
 * must then trust the file's certificates itself, and the process must see the variable as the
 * user set it. Without the variable the push fails on the certificate, in one line.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { missing, skipSuite } from './helpers/probe.js';
import { startRegistry, type RegistryServer } from './helpers/registry-server.js';
import { removeDir, tempDir, type RunResult } from './helpers/tmp.js';
import { assertOneLineError, strata, strataJson } from './helpers/cli.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const LAUNCHER = join(ROOT, 'cli', 'strata');

/** The launcher with `env` over this process's environment less NODE_EXTRA_CA_CERTS (undefined: unset). */
function launch(args: string[], env: Record<string, string | undefined>): RunResult {
  const base = { ...process.env };
  delete base['NODE_EXTRA_CA_CERTS'];
  delete base['STRATA_NODE_EXTRA_CA_CERTS'];
  const full: NodeJS.ProcessEnv = { ...base, STRATA_STORE: '' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) full[k] = v;
  const r = spawnSync(LAUNCHER, args, { env: full, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? Buffer.alloc(0), stderr: (r.stderr ?? Buffer.alloc(0)).toString() + (r.error ? `${r.error.message}\n` : '') };
}

interface Ctx {
  dir: string;
  reg: RegistryServer;
  store: string;
}

const why = missing({ tools: ['docker-registry', 'openssl'] });
if (why) skipSuite('registry over TLS', why);
else {
  const test = suite<Ctx>('registry over TLS: the launcher and NODE_EXTRA_CA_CERTS');
  test.before(async (ctx) => {
    ctx.dir = tempDir('strata-tls-');
    ctx.reg = await startRegistry({ tls: true });
    ctx.store = join(ctx.dir, 'A');
    const tree = join(ctx.dir, 'tree');
    mkdirSync(join(tree, 'opt/tool'), { recursive: true });
    writeFileSync(join(tree, 'opt/tool/README'), 'a tool\n');
    strataJson(['store', 'import', 'tool/1', tree], { store: ctx.store });
  });
  test.after(async (ctx) => {
    await ctx.reg.stop();
    removeDir(ctx.dir);
  });

  test('push and pull over https through the launcher, trusting the CA of NODE_EXTRA_CA_CERTS', ({ dir, reg, store }) => {
    const target = `${reg.url}/tls/a`;
    const push = launch(['--store', store, '--json', 'store', 'push', target, 'tool/1'], { NODE_EXTRA_CA_CERTS: reg.caFile });
    assert.is(push.code, 0, push.stderr);
    const pushed = JSON.parse(push.stdout.toString()) as Array<{ fullName: string; status: string }>;
    assert.equal(pushed.map((p) => [p.fullName, p.status]), [['tool/1', 'pushed']]);
    const B = join(dir, 'B');
    const pull = launch(['--store', B, 'store', 'pull', target, 'tool/1'], { NODE_EXTRA_CA_CERTS: reg.caFile });
    assert.is(pull.code, 0, pull.stderr);
    const shown = (s: string) => strataJson(['store', 'show', 'tool/1'], { store: s }) as { layer: string; manifest: string };
    assert.equal([shown(B).layer, shown(B).manifest], [shown(store).layer, shown(store).manifest], 'the same layer and manifest on both sides');
  });

  test('node started with the variable itself (no launcher) trusts the CA too', ({ reg, store }) => {
    const r = strata(['store', 'push', `${reg.url}/tls/b`, 'tool/1'], { store, env: { NODE_EXTRA_CA_CERTS: reg.caFile! } });
    assert.is(r.code, 0, r.stderr);
  });

  test('without the CA the push fails on the certificate, in one line', ({ reg, store }) => {
    const r = launch(['--store', store, 'store', 'push', `${reg.url}/tls/c`, 'tool/1'], {});
    assertOneLineError(r, 'push to an unknown CA', /TLS certificate is not trusted/);
    assert.match(r.stderr, /NODE_EXTRA_CA_CERTS/, 'the hint names the variable');
  });

  test('https to a registry that speaks plain HTTP fails in one line, naming http://', async ({ dir, store }) => {
    const plain = await startRegistry();
    try {
      const r = launch(['--store', store, 'store', 'push', `https://${plain.host}/x`, 'tool/1'], {});
      assertOneLineError(r, 'TLS to a plain-HTTP registry', /does not answer in TLS/);
      assert.match(r.stderr, new RegExp(`http://${plain.host.replace(/\./g, '\\.')}`));
    } finally {
      await plain.stop();
    }
    void dir;
  });

  test('the launcher holds the variable back from Node\'s start, and the CLI puts it back for what it runs', ({ dir }) => {
    const report = join(dir, 'env-at-exit.json');
    const preload = join(dir, 'report-env.cjs');
    // Loaded before the CLI, in its process: at exit, the environment the process (and any command it ran) had.
    writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify([process.env.NODE_EXTRA_CA_CERTS, process.env.STRATA_NODE_EXTRA_CA_CERTS ?? null])));\n`);
    const missingFile = join(dir, 'no-such-ca.pem');
    const r = launch(['--version'], { NODE_EXTRA_CA_CERTS: missingFile, NODE_OPTIONS: `--require=${preload}` });
    assert.is(r.code, 0, r.stderr);
    // Node given the variable at its start warns that the file cannot be loaded: through the launcher it never saw it.
    assert.not.match(r.stderr, /extra certs/i);
    assert.equal(JSON.parse(readFileSync(report, 'utf8')), [missingFile, null]);
    const direct = strata(['--version'], { env: { NODE_EXTRA_CA_CERTS: missingFile } });
    assert.match(direct.stderr, /extra certs/i, 'node started with the variable reads the file at once');
  });

  test.run();
}
