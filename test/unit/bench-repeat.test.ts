import { test } from 'node:test';
import assert from 'node:assert/strict';
import { medianRun, runsFor } from '../../bench/lib/repeat';
import type { ScenarioResult } from '../../bench/lib/types';

function run(lastS: number | null, verified = true, tag = ''): ScenarioResult {
  return {
    scenario: 'p2p', peers: 16, fileBytes: 64 << 20, rateBitsPerSec: 50e6,
    lastS, medianS: lastS === null ? null : lastS / 2, boundS: 10.74,
    ratio: lastS === null ? null : lastS / 10.74, medianRatio: null,
    originTxBytes: 0, originTxRatio: 1, originBodyBytes: null, supernode: null, peer: null,
    machineCpuBusyPct: 90, allPeersCpuS: null, cpuFloorS: lastS === null ? null : lastS * 2,
    verified, hostsVerified: verified ? 16 : 15, hosts: [], notes: tag ? [tag] : [],
  };
}

test('one run is reported as it is', () => {
  const r = run(14.2, true, 'only');
  assert.equal(medianRun([r]), r);
  assert.throws(() => medianRun([]), /no runs/);
});

test('the median run is reported, with every run in run order', () => {
  const m = medianRun([run(16.1, true, 'a'), run(14.7, true, 'b'), run(15.2, true, 'c')]);
  assert.equal(m.lastS, 15.2);
  assert.deepEqual(m.notes, ['c', 'median of 3 runs (run 3 reported)']);
  assert.deepEqual(m.repeats, {
    lastS: [16.1, 14.7, 15.2], medianS: [16.1 / 2, 14.7 / 2, 15.2 / 2], cpuFloorS: [16.1 * 2, 14.7 * 2, 15.2 * 2], verified: [true, true, true],
  });
  assert.equal(m.verified, true);
});

test('an even count reports the lower middle; a run that never finished counts as the slowest', () => {
  assert.equal(medianRun([run(15), run(14), run(16), run(17)]).lastS, 15);
  assert.equal(medianRun([run(null, false), run(14), run(15)]).lastS, 15);
  assert.equal(medianRun([run(null, false), run(null, false), run(15)]).lastS, null);
});

test('the median run is verified only when every run verified', () => {
  const m = medianRun([run(14), run(15), run(16, false)]);
  assert.equal(m.lastS, 15);
  assert.equal(m.verified, false);
  assert.deepEqual(m.repeats?.verified, [true, true, false]);
  assert.ok(m.notes.includes('run 3 of 3 did not verify'));
  assert.ok(medianRun([run(13, false), run(14), run(16, false)]).notes.includes('runs 1, 3 of 3 did not verify'));
});

test('direct runs once whatever --repeat says; the others as often as it says', () => {
  assert.equal(runsFor('direct', 3), 1);
  assert.equal(runsFor('p2p', 3), 3);
  assert.equal(runsFor('image', 1), 1);
  assert.equal(runsFor('relay', 5), 5);
});
