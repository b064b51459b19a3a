/**
 * Prometheus metrics on a per-app registry (so several apps in one process, as in tests, don't collide):
 * HTTP latency by route, bytes uploaded, jobs by status (from the record counts), queue depth by BullMQ
 * state, workers connected per queue, and job duration by method and status (the histogram the job
 * lifecycle keeps in Redis).
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { JobDurations, jobDurationBuckets } from '../jobs/durations.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: { registry: Registry; bytesUploaded: Counter };
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
    registry.registerMetric(jobDurationMetric(new JobDurations(app.services.redis, app.services.config.redisPrefix)));
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
          const counts = await queue
            .getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed')
            .catch(() => ({}));
          for (const [state, n] of Object.entries(counts)) this.set({ queue: name, state }, n);
        }
      },
    });
    new Gauge({
      name: 'qaas_workers',
      help: 'Workers connected to each queue (0 on the quantize queue: jobs wait for nobody)',
      labelNames: ['queue'],
      registers: [registry],
      async collect() {
        for (const [name, queue] of Object.entries(app.services.queues)) {
          const count = await queue.getWorkersCount().catch(() => undefined);
          if (count !== undefined) this.set({ queue: name }, count);
        }
      },
    });
    app.decorate('metrics', { registry, bytesUploaded });
    app.addHook('onResponse', async (request, reply) => {
      httpDuration.observe(
        { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
        reply.elapsedTime / 1000,
      );
    });
  },
  { name: 'qaas-metrics', dependencies: ['qaas-services'] },
);

/**
 * qaas_job_duration_seconds as a prom-client metric whose values are read from Redis at each scrape:
 * prom-client's Histogram only counts observations made in this process.
 */
function jobDurationMetric(durations: JobDurations) {
  const name = 'qaas_job_duration_seconds';
  const help = 'Job run time from start to end, by method and final status';
  const bounds = [...jobDurationBuckets.map(String), '+Inf'];
  const metric = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    reset() {},
    async get() {
      const values: { metricName: string; labels: Record<string, string>; value: number }[] = [];
      for (const { method, status, buckets, sum } of await durations.read().catch(() => [])) {
        let count = 0;
        for (const [i, le] of bounds.entries()) {
          count += buckets[i];
          values.push({ metricName: `${name}_bucket`, labels: { le, method, status }, value: count });
        }
        values.push({ metricName: `${name}_sum`, labels: { method, status }, value: sum });
        values.push({ metricName: `${name}_count`, labels: { method, status }, value: count });
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
  };
  // The registry reads only name, help, type, get() and reset(); its types admit its own metric classes only.
  return metric as unknown as Histogram;
}
