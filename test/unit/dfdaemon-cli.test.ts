import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { tempDirSync } from '../helpers/tmp';

const CLI = path.join(__dirname, '..', '..', 'src', 'cli', 'dfdaemon.js');

function run(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, DF_LOG_LEVEL: 'info' }, timeout: 20_000 });
}

function tmpFile(name: string, text: string): string {
  const dir = tempDirSync('dfdaemon-cli-');
  const file = path.join(dir, name);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

test('--help documents every flag and exits 0', () => {
  const r = run(['--help']);
  assert.equal(r.status, 0);
  for (const flag of ['--registry', '--ratelimit', '--port', '--host-ip', '--node', '--home', '--config', '--verbose', '--help', '--version']) {
    assert.ok(r.stdout.includes(flag), `help mentions ${flag}`);
  }
});

test('bad flags and configs: one line on stderr, exit code 2, no stack trace', () => {
  const bad = tmpFile('bad.yml', 'registry_mirror:\n  remote: https://r.example.com\n  tls: true\n');
  const cases: Array<[string[], RegExp]> = [
    [['--port', '99999'], /^dfdaemon: DF_ERR_INVALID_ARGUMENT: --port: /],
    [['--ratelimit', 'lots'], /^dfdaemon: DF_ERR_INVALID_ARGUMENT: --ratelimit: /],
    [['--registry', 'ftp://x'], /^dfdaemon: DF_ERR_INVALID_ARGUMENT: --registry: /],
    [['--no-such-flag'], /^dfdaemon: DF_ERR_INVALID_ARGUMENT: Unknown argument/],
    [['--config', bad], /^dfdaemon: DF_ERR_INVALID_CONFIG: .*registry_mirror\.tls: unknown key/],
    [['--config', '/nonexistent/dfdaemon.yml'], /^dfdaemon: DF_ERR_INVALID_CONFIG: cannot read config file/],
  ];
  for (const [args, re] of cases) {
    const r = run(args);
    assert.equal(r.status, 2, args.join(' '));
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0], re);
  }
});

test('starts, serves, keeps credentials out of its logs, stops on SIGTERM', async (t) => {
  const password = 'correct-horse-battery';
  const cfg = tmpFile('dfdaemon.yml', [
    'registry_mirror:',
    '  remote: http://127.0.0.1:9',
    '  insecure: true',
    '  auth:',
    '    username: someone',
    `    password: ${password}`,
  ].join('\n'));
  const child = spawn(process.execPath, [CLI, '--port', '0', '--config', cfg, '--verbose'], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  const logs: string[] = [];
  const lines = createInterface({ input: child.stderr! });
  const port = await new Promise<number>((resolve, reject) => {
    lines.on('line', (line) => {
      logs.push(line);
      try {
        const o = JSON.parse(line) as { port?: number; msg?: string };
        if (o.msg === 'dfdaemon listening' && o.port) resolve(o.port);
      } catch { /* not JSON */ }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${logs.join('\n')}`)));
  });
  const get = (p: string) => new Promise<number>((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: p, agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); })
      .on('error', reject).end();
  });
  assert.equal(await get('/healthz'), 200);
  // The upstream (port 9) is closed: a clean 502, and a log line about it.
  assert.equal(await get('/v2/'), 502);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  assert.equal(await exit, 0);
  const all = logs.join('\n');
  assert.ok(!all.includes(password), 'password never logged');
  assert.ok(!all.includes(Buffer.from(`someone:${password}`).toString('base64')), 'Basic header never logged');
  assert.ok(!all.includes('someone'), 'username never logged');
});
