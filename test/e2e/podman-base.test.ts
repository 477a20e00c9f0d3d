/**
 * Proves podman runs containers on this machine (vfs, runc, cgroupfs) and that
 * makeNodeBaseImage() yields a working Node.js image without any registry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPodmanStore, makeNodeBaseImage, podmanCmd } from '../helpers/podman';

test('node base image made from host files runs node under podman', async (t) => {
  const store = await createPodmanStore();
  t.after(() => store.close());
  const tag = 'localhost/df-node-base:test';
  const id = await makeNodeBaseImage(tag, { store });
  assert.match(id, /^(sha256:)?[a-f0-9]{64}$/);

  const r = await podmanCmd(['run', '--rm', '--network', 'host', tag, 'node', '-e', 'console.log(1+1)'], { store });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '2');

  await t.test('as the non-root user, with a shell and a writable /tmp', async () => {
    // dash builtins only (no coreutils in the image): write with node, read back with the shell.
    const script = 'node -e "require(\'fs\').writeFileSync(\'/tmp/x\', process.getuid() + \'\\\\n\')" && read v < /tmp/x && echo "$v"';
    const u = await podmanCmd(['run', '--rm', '--network', 'host', '--user', 'node', tag, '/bin/sh', '-c', script], { store });
    assert.equal(u.code, 0, u.stderr);
    assert.equal(u.stdout.trim(), '1000');
  });

  await t.test('reaches a server on the host loopback with --network host', async (tt) => {
    const http = await import('node:http');
    const server = http.createServer((_req, res) => res.end('pong'));
    server.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    tt.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as import('node:net').AddressInfo).port;
    const code = `fetch('http://127.0.0.1:${port}/').then(r => r.text()).then(t => console.log(t))`;
    const f = await podmanCmd(['run', '--rm', '--network', 'host', tag, 'node', '-e', code], { store });
    assert.equal(f.code, 0, f.stderr);
    assert.equal(f.stdout.trim(), 'pong');
  });

  await t.test('store.close() stops containers a test left running', async () => {
    const d = await podmanCmd(['run', '-d', '--network', 'host', tag, 'node', '-e', 'setInterval(() => {}, 1000)'], { store });
    assert.equal(d.code, 0, d.stderr);
    const inspect = await podmanCmd(['inspect', '--format', '{{.State.Pid}}', d.stdout.trim()], { store });
    const pid = Number(inspect.stdout.trim());
    assert.ok(pid > 0, inspect.stderr);
    assert.equal(isAlive(pid), true);
    await store.close();
    assert.equal(isAlive(pid), false);
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
