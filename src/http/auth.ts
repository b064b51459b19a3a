/**
 * API keys: `Authorization: Bearer <key>` is hashed (sha256) and looked up among the configured hashes, so
 * the keys themselves are never held. With no keys configured every request is the one `local` tenant
 * (the service then binds to localhost only). Health, metrics and docs stay open.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { hashApiKey, type Config } from '../config.js';
import { ApiProblem } from './errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenant: string;
  }
}

export const localTenant = 'local';

export const authPlugin = fp(
  async (app: FastifyInstance, { config }: { config: Config }) => {
    const tenants = new Map(config.apiKeys.map((key) => [key.keyHash, key.tenant]));
    app.decorateRequest('tenant', '');
    app.addHook('onRequest', async (request: FastifyRequest) => {
      if (!request.url.startsWith('/v1/')) return;
      if (tenants.size === 0) {
        request.tenant = localTenant;
        return;
      }
      const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '');
      const tenant = match ? tenants.get(hashApiKey(match[1])) : undefined;
      if (!tenant) throw new ApiProblem('unauthorized', 'send Authorization: Bearer <api key>');
      request.tenant = tenant;
    });
  },
  { name: 'qaas-auth' },
);
