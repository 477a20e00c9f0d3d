/** Checks on dfget's output path, kept apart from the download code so the CLI can run them before loading it. */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DfError } from '../common/errors';
import { infoPath, lockPath } from './uploader-files';

/** What dfget and its uploader keep in the home h: FILE may be none of these, nor lie under the directories. */
const homeEntries = (h: string) => [path.join(h, 'data'), path.join(h, 'logs'), lockPath(h), infoPath(h)];

/** Whether `child` is `parent` or lies under it (both absolute). */
function within(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/**
 * The output's directory must exist and be writable, and FILE must not be a
 * directory. With the home given, FILE must not be the home, a directory
 * above it, or one of the home's own entries: dfget would make a directory
 * there, or overwrite the uploader's state, and find out only at the end.
 */
export async function checkOutput(output: string, home?: string): Promise<void> {
  if (home !== undefined) {
    const out = path.resolve(output);
    const h = path.resolve(home);
    if (within(out, h)) throw new DfError('DF_ERR_OUTPUT_PATH', `output ${output} is the --home directory ${h} or above it`);
    const entries = homeEntries(h);
    if (entries.some((e) => within(e, out))) {
      throw new DfError('DF_ERR_OUTPUT_PATH', `output ${output} is inside the --home directory's own files (${entries.map((e) => path.basename(e)).join(', ')})`);
    }
  }
  const dir = path.dirname(path.resolve(output));
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st || !st.isDirectory()) throw new DfError('DF_ERR_OUTPUT_PATH', `output directory ${dir} does not exist`);
  try {
    await fsp.access(dir, fs.constants.W_OK);
  } catch {
    throw new DfError('DF_ERR_OUTPUT_PATH', `output directory ${dir} is not writable`);
  }
  const out = await fsp.stat(output).catch(() => undefined);
  if (out?.isDirectory()) throw new DfError('DF_ERR_OUTPUT_PATH', `output ${output} is a directory`);
}
