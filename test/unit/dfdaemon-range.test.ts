import { test } from 'node:test';
import assert from 'node:assert/strict';
import { contentRange, parseRangeHeader, resolveRange } from '../../src/dfdaemon/range';

test('parses the single-range forms', () => {
  assert.deepEqual(parseRangeHeader(undefined), { kind: 'none' });
  assert.deepEqual(parseRangeHeader(''), { kind: 'none' });
  assert.deepEqual(parseRangeHeader('bytes=0-99'), { kind: 'range', start: 0, end: 99 });
  assert.deepEqual(parseRangeHeader('bytes=100-'), { kind: 'range', start: 100 });
  assert.deepEqual(parseRangeHeader('bytes=-500'), { kind: 'suffix', length: 500 });
  assert.deepEqual(parseRangeHeader('Bytes = 5 - 5'), { kind: 'range', start: 5, end: 5 });
  assert.deepEqual(parseRangeHeader(['bytes=1-2']), { kind: 'range', start: 1, end: 2 });
});

test('refuses what it cannot honour', () => {
  for (const h of ['bytes=5-1', 'bytes=-', 'bytes=-0', 'bytes=a-b', 'items=0-1', 'bytes=0-1,3-4', 'bytes 0-1', 'bytes=99999999999999999999-', 'bytes=0-99999999999999999999']) {
    assert.equal(parseRangeHeader(h).kind, 'invalid', h);
  }
  assert.equal(parseRangeHeader(['bytes=0-1', 'bytes=2-3']).kind, 'invalid');
});

test('resolves against the blob length, clamping the end', () => {
  assert.deepEqual(resolveRange({ kind: 'range', start: 2, end: 5 }, 10), { start: 2, end: 5 });
  assert.deepEqual(resolveRange({ kind: 'range', start: 2, end: 50 }, 10), { start: 2, end: 9 });
  assert.deepEqual(resolveRange({ kind: 'range', start: 9 }, 10), { start: 9, end: 9 });
  assert.equal(resolveRange({ kind: 'range', start: 10 }, 10), undefined);
  assert.equal(resolveRange({ kind: 'range', start: 0 }, 0), undefined);
  assert.deepEqual(resolveRange({ kind: 'suffix', length: 3 }, 10), { start: 7, end: 9 });
  assert.deepEqual(resolveRange({ kind: 'suffix', length: 30 }, 10), { start: 0, end: 9 });
  assert.equal(resolveRange({ kind: 'suffix', length: 3 }, 0), undefined);
  assert.equal(contentRange({ start: 7, end: 9 }, 10), 'bytes 7-9/10');
});
