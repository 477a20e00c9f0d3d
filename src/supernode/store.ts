/**
 * Task metadata that outlives a restart. Only completed, verified tasks are
 * stored: a task cut short by a restart is fetched again, never half-served.
 */
import { Level } from 'level';

export interface TaskMeta {
  taskId: string;
  /** Source URL without its query string (for operators; never credentials). */
  urlPath: string;
  contentLength: number;
  pieceSize: number;
  /** Hex sha256 of each piece, in order. */
  pieces: string[];
  /** Hex sha256 of the whole file. */
  sha256: string;
  completedAt: number;
}

export interface TaskStore {
  get(taskId: string): Promise<TaskMeta | undefined>;
  put(meta: TaskMeta): Promise<void>;
  delete(taskId: string): Promise<void>;
  list(): Promise<TaskMeta[]>;
  close(): Promise<void>;
}

export class LevelTaskStore implements TaskStore {
  private readonly db: Level<string, TaskMeta>;
  constructor(dir: string) {
    this.db = new Level<string, TaskMeta>(dir, { valueEncoding: 'json' });
  }
  async open(): Promise<void> { await this.db.open(); }
  async get(taskId: string): Promise<TaskMeta | undefined> {
    return (await this.db.get(`task:${taskId}`)) ?? undefined;
  }
  async put(meta: TaskMeta): Promise<void> { await this.db.put(`task:${meta.taskId}`, meta); }
  async delete(taskId: string): Promise<void> { await this.db.del(`task:${taskId}`); }
  async list(): Promise<TaskMeta[]> {
    const out: TaskMeta[] = [];
    for await (const v of this.db.values({ gte: 'task:', lt: 'task;' })) out.push(v);
    return out;
  }
  async close(): Promise<void> { if (this.db.status === 'open') await this.db.close(); }
}

export class MemoryTaskStore implements TaskStore {
  private readonly m = new Map<string, TaskMeta>();
  async get(id: string) { return this.m.get(id); }
  async put(meta: TaskMeta) { this.m.set(meta.taskId, meta); }
  async delete(id: string) { this.m.delete(id); }
  async list() { return [...this.m.values()]; }
  async close() { /* nothing to release */ }
}
