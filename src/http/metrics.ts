/**
 * Prometheus metrics on a per-app registry (so several apps in one process, as in tests, don't collide):
 * HTTP latency by route, bytes uploaded, jobs by status (from the record counts), queue depth by BullMQ
 * state, and job duration by method (observed when QueueEvents reports a job's end).
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { isTerminal } from '../jobs/lifecycle.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: { registry: Registry; bytesUploaded: Counter; jobDuration: Histogram<'method' | 'status'> };
  }
}

export const metricsPlugin = fp(
  async (app: FastifyInstance) => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const httpDuration = new Histogram({
      name: 'qaas_http_request_duration_seconds',
      help: 'HTTP request latency',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
    const bytesUploaded = new Counter({
      name: 'qaas_uploaded_bytes_total',
      help: 'Bytes received in model and dataset uploads',
      registers: [registry],
    });
    const jobDuration = new Histogram({
      name: 'qaas_job_duration_seconds',
      help: 'Job run time from start to end, by method',
      labelNames: ['method', 'status'],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800],
      registers: [registry],
    });
    new Gauge({
      name: 'qaas_jobs',
      help: 'Jobs by status',
      labelNames: ['status'],
      registers: [registry],
      async collect() {
        const counts = await app.services.records.countByStatus('jobs').catch(() => ({}));
        for (const [status, n] of Object.entries(counts)) this.set({ status }, n);
      },
    });
    new Gauge({
      name: 'qaas_queue_jobs',
      help: 'BullMQ jobs by queue and state',
      labelNames: ['queue', 'state'],
      registers: [registry],
      async collect() {
        for (const [name, queue] of Object.entries(app.services.queues)) {
          const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed').catch(() => ({}));
          for (const [state, n] of Object.entries(counts)) this.set({ queue: name, state }, n);
        }
      },
    });
    app.decorate('metrics', { registry, bytesUploaded, jobDuration });
    // Jobs end in worker processes; their end reaches every API replica through QueueEvents.
    const observeEnd = async ({ jobId }: { jobId: string }) => {
      const queued = await app.services.queues.quantize.getJob(jobId);
      if (!queued) return;
      const record = await app.services.records.get('jobs', (queued.data as { tenant: string }).tenant, jobId);
      if (!record?.startedAt || !record.finishedAt || !isTerminal(record)) return;
      const seconds = (Date.parse(record.finishedAt) - Date.parse(record.startedAt)) / 1000;
      jobDuration.observe({ method: record.method, status: record.status }, seconds);
    };
    app.addHook('onReady', async () => {
      const events = app.services.queueEvents();
      const observe = (event: { jobId: string }) => void observeEnd(event).catch(() => undefined);
      events.on('completed', observe);
      events.on('failed', observe);
    });
    app.addHook('onResponse', async (request, reply) => {
      httpDuration.observe(
        { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
        reply.elapsedTime / 1000,
      );
    });
  },
  { name: 'qaas-metrics', dependencies: ['qaas-services'] },
);
