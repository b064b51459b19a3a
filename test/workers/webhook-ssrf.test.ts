/**
 * Webhooks cannot be aimed into the operator's network (issue 10 item 9): internal addresses are refused at
 * submission and again at delivery (after resolving the host), unless QAAS_WEBHOOK_ALLOW names them;
 * redirects are not followed; a slow or endless answer is cut off. Deliveries go through a real BullMQ
 * worker on real Redis to real sockets on loopback, which the tests allow-list where delivery must happen.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { workerConnection, type WebhookPayload } from '../../src/jobs/queue.js';
import { addressRefusal, parseAllowList, urlRefusal } from '../../src/jobs/webhook-target.js';
import { RecordStore } from '../../src/storage/records.js';
import type { JobRecord, WebhookDelivery } from '../../src/storage/types.js';
import { MAX_RESPONSE_BYTES, webhookProcessor } from '../../workers/webhook.js';
import { cleanup, filesAsParts, multipart, redisUrl, testConfig, tinyModel } from '../http/helpers.js';

const none = parseAllowList('');

describe('which addresses may receive webhooks', () => {
  const internal = [
    'http://169.254.169.254/latest/meta-data/',
    'http://127.0.0.1:6379/',
    'http://[::1]:8080/',
    'http://10.0.0.5/',
    'http://172.16.3.4/',
    'http://192.168.1.1/',
    'http://2130706433/',
    'http://0x7f000001/',
    'http://0177.0.0.1/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::ffff:169.254.169.254]/',
    'http://[fd12:3456::1]/',
    'http://[fe80::1]/',
    'http://224.0.0.251/',
    'http://0.0.0.0:6379/',
    'http://[::]/',
    'http://100.64.0.1/',
  ];
  for (const url of internal) {
    it(`refuses ${url}`, () => {
      expect(urlRefusal(url, none)).toMatch(
        /loopback|private|linkLocal|uniqueLocal|multicast|unspecified|carrierGradeNat/,
      );
    });
  }

  it('takes global unicast addresses, and host names (judged when resolved)', () => {
    expect(urlRefusal('https://93.184.215.14/hook', none)).toBeNull();
    expect(urlRefusal('https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook', none)).toBeNull();
    expect(urlRefusal('https://hooks.example.com/hook', none)).toBeNull();
  });

  it('takes what the allow-list names: an address, a range, a host', () => {
    const allow = parseAllowList('127.0.0.1, 10.0.0.0/8, fd00::/8, hooks.internal');
    expect(urlRefusal('http://127.0.0.1:9000/', allow)).toBeNull();
    expect(urlRefusal('http://2130706433:9000/', allow)).toBeNull();
    expect(urlRefusal('http://[::ffff:127.0.0.1]/', allow)).toBeNull();
    expect(urlRefusal('http://10.200.0.1/', allow)).toBeNull();
    expect(addressRefusal('fd12::1', allow)).toBeNull();
    expect(urlRefusal('http://127.0.0.2/', allow)).toMatch(/loopback/);
    expect(urlRefusal('http://192.168.0.1/', allow)).toMatch(/private/);
    expect(urlRefusal('http://hooks.internal/', allow)).toBeNull();
  });

  it('refuses an allow-list entry that is none of these', () => {
    expect(() => parseAllowList('10.0.0.0/33')).toThrow(/CIDR/);
    expect(() => parseAllowList('not a host!')).toThrow(/neither/);
  });
});

describe('submission', () => {
  let config: Config;
  let app: FastifyInstance;
  let modelId: string;
  beforeAll(async () => {
    config = await testConfig({ QAAS_WEBHOOK_ALLOW: '127.0.0.2' });
    app = await buildApp(config, { logger: false });
    const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(filesAsParts(await tinyModel())) });
    modelId = res.json().id;
  });
  afterAll(async () => {
    await app?.close();
    if (config) await cleanup(config);
  });

  it('answers 400 naming /webhook/url for an internal address, 202 for an allow-listed one', async () => {
    for (const url of ['http://127.0.0.1:6379/', 'http://2130706433/', 'http://[::1]/', 'http://169.254.169.254/']) {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        payload: { modelId, method: { name: 'float16' }, webhook: { url } },
      });
      expect(res.statusCode, url).toBe(400);
      expect(res.json().problems[0].path).toBe('/webhook/url');
    }
    const allowed = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { modelId, method: { name: 'float16' }, webhook: { url: 'http://127.0.0.2:9/hook' } },
    });
    expect(allowed.statusCode, allowed.body).toBe(202);
  });
});

describe('delivery', () => {
  const prefix = `test-${randomUUID()}`;
  const redis = new Redis(redisUrl);
  const records = new RecordStore(redis, prefix);
  const queue = new Queue<WebhookPayload>('webhooks', { connection: redis, prefix: `${prefix}:bull` });
  const servers: Server[] = [];
  let worker: Worker<WebhookPayload> | undefined;

  afterEach(async () => {
    await worker?.close();
    worker = undefined;
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  afterAll(async () => {
    await queue.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  async function receiver(handle: (request: IncomingMessage, response: ServerResponse) => void): Promise<number> {
    const server = createServer(handle);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  }

  /** Stores a finished job naming `url`, queues its delivery once, and waits for the attempt's outcome. */
  async function deliver(url: string, allow: string, timeoutMs = 5000): Promise<WebhookDelivery> {
    const id = `job_${randomUUID().replace(/-/g, '').slice(0, 25)}`;
    const record: JobRecord = {
      id,
      tenant: 'local',
      status: 'succeeded',
      stage: 'store',
      progress: 100,
      kind: 'ptq',
      modelId: 'mdl_x',
      method: 'float16',
      spec: {},
      webhookUrl: url,
      attempts: 1,
      createdAt: new Date().toISOString(),
      startedAt: null,
      finishedAt: null,
      error: null,
      summary: null,
      artifacts: [],
    };
    await records.create('jobs', record);
    worker = new Worker<WebhookPayload>(
      'webhooks',
      webhookProcessor({ records, redis, allow: parseAllowList(allow), timeoutMs }),
      { connection: workerConnection(redisUrl), prefix: `${prefix}:bull` },
    );
    await queue.add('deliver', { tenant: 'local', jobId: id }, { attempts: 1 });
    for (;;) {
      const current = await records.get('jobs', 'local', id);
      if (current?.webhookDelivery) return current.webhookDelivery;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('delivers to an allow-listed loopback receiver', async () => {
    const bodies: string[] = [];
    const port = await receiver((request, response) => {
      let body = '';
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => {
        bodies.push(body);
        response.writeHead(204).end();
      });
    });
    const delivery = await deliver(`http://127.0.0.1:${port}/hook`, '127.0.0.1');
    expect(delivery).toMatchObject({ status: 'delivered', httpStatus: 204, attempt: 1 });
    expect(JSON.parse(bodies[0]).event).toBe('job.succeeded');
  });

  it('refuses a host name that resolves to loopback, recording why, and never connects', async () => {
    let hits = 0;
    const port = await receiver((_request, response) => {
      hits++;
      response.writeHead(204).end();
    });
    const delivery = await deliver(`http://localhost:${port}/hook`, '');
    expect(delivery.status).toBe('refused');
    expect(delivery.detail).toMatch(/localhost resolves to no address that may receive webhooks.*loopback/);
    expect(hits).toBe(0);
  });

  it('refuses an IP literal at delivery too (a job queued before the allow-list changed)', async () => {
    const delivery = await deliver('http://2130706433:6379/', '');
    expect(delivery).toMatchObject({ status: 'refused', attempt: 1 });
    expect(delivery.detail).toMatch(/127\.0\.0\.1 is a loopback address/);
  });

  it('does not follow a redirect, even to an allowed address', async () => {
    const paths: string[] = [];
    const port = await receiver((request, response) => {
      paths.push(request.url ?? '');
      request.resume();
      response.writeHead(302, { location: '/elsewhere' }).end();
    });
    const delivery = await deliver(`http://127.0.0.1:${port}/hook`, '127.0.0.1');
    expect(delivery).toMatchObject({ status: 'failed', httpStatus: 302 });
    expect(delivery.detail).toMatch(/redirects are not followed/);
    expect(paths).toEqual(['/hook']);
  });

  it('gives up on a receiver that never answers after the configured time', async () => {
    const port = await receiver((request) => request.resume());
    const delivery = await deliver(`http://127.0.0.1:${port}/hook`, '127.0.0.1', 300);
    expect(delivery).toMatchObject({ status: 'failed', detail: 'no answer within 300 ms' });
  });

  it('reads at most MAX_RESPONSE_BYTES of an endless answer, then hangs up', async () => {
    let closed: Promise<void> = Promise.resolve();
    let sent = 0;
    const port = await receiver((request, response) => {
      request.resume();
      response.writeHead(200);
      closed = new Promise((resolve) => response.on('close', () => resolve()));
      const chunk = Buffer.alloc(16 * 1024, 120);
      const pump = () => {
        while (!response.destroyed && response.write(chunk)) sent += chunk.length;
        if (!response.destroyed) response.once('drain', pump);
      };
      pump();
    });
    const delivery = await deliver(`http://127.0.0.1:${port}/hook`, '127.0.0.1');
    expect(delivery).toMatchObject({ status: 'delivered', httpStatus: 200 });
    await closed;
    // Socket buffers hold a few hundred KiB at most; an unbounded reader would have taken everything.
    expect(sent).toBeLessThan(MAX_RESPONSE_BYTES + 8 * 1024 * 1024);
  });
});
