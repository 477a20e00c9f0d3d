/**
 * Preloaded into the Node programs the benchmark starts (NODE_OPTIONS=--require
 * ...procstat-hook.js, so it also reaches children such as dfget's detached
 * uploader). When BENCH_PROCSTAT_DIR is set, it records the process's own
 * /proc/self/stat and /proc/self/status at the last moment a process can: its
 * 'exit' event, after all work is done. The benchmark reads DIR/<pid>.json.
 *
 * Nothing here may change what the program does: every step is guarded, and a
 * process killed by a signal it does not handle simply leaves no file.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env.BENCH_PROCSTAT_DIR;
if (dir) {
  process.on('exit', () => {
    try {
      const stat = readFileSync('/proc/self/stat', 'utf8');
      const status = readFileSync('/proc/self/status', 'utf8');
      const ru = process.resourceUsage();
      const record = {
        pid: process.pid,
        script: process.argv[1] ?? '',
        stat,
        status,
        // Cross-check from getrusage(RUSAGE_SELF): microseconds and KiB.
        rusage: { userUs: ru.userCPUTime, systemUs: ru.systemCPUTime, maxRssKiB: ru.maxRSS },
      };
      writeFileSync(join(dir, `${process.pid}.json`), JSON.stringify(record));
    } catch {
      /* a measurement must never turn into a failure of the program */
    }
  });
}
