/**
 * Webhook delivery for the `webhooks` queue (light I/O, so it runs in-process): POST the job's final record
 * to its URL with `X-Qaas-Signature: sha256=<hex HMAC-SHA256 of the body>` when the job gave a secret.
 * A non-2xx answer or a network error throws, and BullMQ retries with exponential backoff.
 */
import { createHmac } from 'node:crypto';
import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { WebhookPayload } from '../src/jobs/queue.js';
import { publicJob } from '../src/jobs/view.js';
import type { RecordStore } from '../src/storage/records.js';

export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export function webhookProcessor(deps: { records: RecordStore; redis: Redis; timeoutMs?: number }) {
  return async (job: Job<WebhookPayload>): Promise<{ status: number }> => {
    const { tenant, jobId } = job.data;
    const record = await deps.records.get('jobs', tenant, jobId);
    if (!record?.webhookUrl) return { status: 0 };
    const { webhookUrl } = record;
    const body = JSON.stringify({ event: `job.${record.status}`, job: publicJob(record) });
    const secret = await deps.redis.get(deps.records.keys.webhookSecret(tenant, jobId));
    const response = await fetch(webhookUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'qaas-webhook',
        'x-qaas-delivery': String(job.id),
        ...(secret ? { 'x-qaas-signature': signBody(secret, body) } : {}),
      },
      body,
      signal: AbortSignal.timeout(deps.timeoutMs ?? 10_000),
    });
    if (!response.ok) throw new Error(`webhook ${webhookUrl} answered ${response.status}`);
    return { status: response.status };
  };
}
