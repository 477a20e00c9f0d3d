/** Checks on dfget's output path, kept apart from the download code so the CLI can run them before loading it. */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DfError } from '../common/errors';

/** The output's directory must exist and be writable, and FILE must not be a directory. */
export async function checkOutput(output: string): Promise<void> {
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
