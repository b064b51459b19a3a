/**
 * QAT checkpoints of running jobs, one file per job under DATA_DIR/checkpoints, so an attempt that dies
 * (or is retried) resumes after its last finished epoch instead of training from the start. Written to a
 * temp file and renamed, so a half-written checkpoint is never read. v8 serialization keeps the
 * Float32Arrays as they are.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';

export class CheckpointStore<T> {
  constructor(private readonly dataDir: string) {}

  private pathOf(tenant: string, jobId: string): string {
    return join(this.dataDir, 'checkpoints', tenant, `${jobId}.v8`);
  }

  async save(tenant: string, jobId: string, checkpoint: T): Promise<void> {
    const path = this.pathOf(tenant, jobId);
    await mkdir(join(this.dataDir, 'checkpoints', tenant), { recursive: true });
    const temp = `${path}.tmp-${randomUUID()}`;
    await writeFile(temp, serialize(checkpoint));
    await rename(temp, path);
  }

  async load(tenant: string, jobId: string): Promise<T | undefined> {
    try {
      return deserialize(await readFile(this.pathOf(tenant, jobId))) as T;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async remove(tenant: string, jobId: string): Promise<void> {
    await rm(this.pathOf(tenant, jobId), { force: true });
  }
}
