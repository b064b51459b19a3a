/**
 * Webhook delivery for the `webhooks` queue (light I/O, so it runs in-process): POST the job's final record
 * to its URL with `X-Qaas-Signature: sha256=<hex HMAC-SHA256 of the body>` when the job gave a secret.
 *
 * The URL is the tenant's, the network the operator's (SSRF): the host is resolved here, at delivery, and
 * the connection goes to an address that was checked (the http agent's `lookup` is the check, so no second
 * resolution can rebind the name in between); IP literals are checked before connecting. Only global
 * unicast addresses, or what QAAS_WEBHOOK_ALLOW names, receive (src/jobs/webhook-target.ts). Redirects are
 * never followed, the exchange is bounded in time and the answer read at most MAX_RESPONSE_BYTES.
 *
 * Each attempt's outcome is kept on the job record (`webhookDelivery`). A refused address or a redirect
 * fails at once (UnrecoverableError: no retry can change it); a non-2xx answer or a network error throws
 * and BullMQ retries with exponential backoff.
 */
import { createHmac } from 'node:crypto';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { WebhookPayload } from '../src/jobs/queue.js';
import { publicJob } from '../src/jobs/view.js';
import {
  addressRefusal,
  emptyAllowList,
  isAllowedHost,
  urlRefusal,
  type WebhookAllowList,
} from '../src/jobs/webhook-target.js';
import type { RecordStore } from '../src/storage/records.js';
import type { WebhookDelivery } from '../src/storage/types.js';

/** A receiver acknowledges; it has nothing to tell that needs more than this. */
export const MAX_RESPONSE_BYTES = 64 * 1024;

export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

class RefusedAddress extends Error {
  override readonly name = 'RefusedAddress';
}

/** dns.lookup, keeping only the addresses the allow-list lets receive; none left is a RefusedAddress. */
function checkedLookup(allow: WebhookAllowList): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { all: true, family: options.family ?? 0 }, (error, addresses: LookupAddress[]) => {
      if (error) return callback(error, '', 0);
      const allowed = isAllowedHost(hostname, allow)
        ? addresses
        : addresses.filter((a) => addressRefusal(a.address, allow) === null);
      if (allowed.length === 0) {
        const why = addresses.map((a) => addressRefusal(a.address, allow)).join('; ');
        return callback(
          new RefusedAddress(`${hostname} resolves to no address that may receive webhooks: ${why}`),
          '',
          0,
        );
      }
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
      callback(null, allowed[0].address, allowed[0].family);
    });
  };
}

/** POSTs `body`; resolves with the status once at most MAX_RESPONSE_BYTES of the answer were read. */
function post(
  url: URL,
  body: string,
  headers: Record<string, string>,
  allow: WebhookAllowList,
  timeoutMs: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send(
      url,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        lookup: checkedLookup(allow),
        // A fresh connection each time: a pooled socket would skip the lookup, and with it the check.
        agent: false,
        signal: AbortSignal.timeout(timeoutMs),
      },
      (response: IncomingMessage) => {
        let bytes = 0;
        const done = () => resolve(response.statusCode ?? 0);
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > MAX_RESPONSE_BYTES) {
            response.destroy();
            done();
          }
        });
        response.on('end', done);
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

export function webhookProcessor(deps: {
  records: RecordStore;
  redis: Redis;
  allow?: WebhookAllowList;
  timeoutMs?: number;
}) {
  const allow = deps.allow ?? emptyAllowList;
  return async (job: Job<WebhookPayload>): Promise<{ status: number }> => {
    const { tenant, jobId } = job.data;
    const record = await deps.records.get('jobs', tenant, jobId);
    if (!record?.webhookUrl) return { status: 0 };
    const { webhookUrl } = record;
    const attempt = job.attemptsMade + 1;
    const note = (delivery: Omit<WebhookDelivery, 'at' | 'attempt'>) =>
      deps.records.update('jobs', tenant, jobId, (current) => ({
        ...current,
        webhookDelivery: { ...delivery, at: new Date().toISOString(), attempt },
      }));

    const refusal = urlRefusal(webhookUrl, allow);
    if (refusal !== null) {
      await note({ status: 'refused', detail: refusal });
      throw new UnrecoverableError(`webhook ${webhookUrl} refused: ${refusal}`);
    }
    // The delivery's own bookkeeping is not news to the receiver.
    const { webhookDelivery: _delivery, ...shown } = publicJob(record);
    const body = JSON.stringify({ event: `job.${record.status}`, job: shown });
    const secret = await deps.redis.get(deps.records.keys.webhookSecret(tenant, jobId));
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'qaas-webhook',
      'x-qaas-delivery': String(job.id),
      ...(secret ? { 'x-qaas-signature': signBody(secret, body) } : {}),
    };
    let status: number;
    try {
      status = await post(new URL(webhookUrl), body, headers, allow, deps.timeoutMs ?? 10_000);
    } catch (error) {
      const message = (error as Error).message;
      if (error instanceof RefusedAddress) {
        await note({ status: 'refused', detail: message });
        throw new UnrecoverableError(`webhook ${webhookUrl} refused: ${message}`);
      }
      const detail = ['AbortError', 'TimeoutError'].includes((error as Error).name)
        ? `no answer within ${deps.timeoutMs ?? 10_000} ms`
        : message;
      await note({ status: 'failed', detail });
      throw new Error(`webhook ${webhookUrl}: ${detail}`);
    }
    if (status >= 300 && status < 400) {
      const detail = `answered ${status}; redirects are not followed`;
      await note({ status: 'failed', httpStatus: status, detail });
      throw new UnrecoverableError(`webhook ${webhookUrl} ${detail}`);
    }
    if (status < 200 || status >= 300) {
      await note({ status: 'failed', httpStatus: status, detail: `answered ${status}` });
      throw new Error(`webhook ${webhookUrl} answered ${status}`);
    }
    await note({ status: 'delivered', httpStatus: status });
    return { status };
  };
}
