/**
 * The dashboard's files: `GET /` is its page, `GET /dashboard/*` its ES modules and styles (served from the
 * source tree, so `tsc` needs no copy step and nothing is bundled), plus the two browser libraries it uses,
 * chart.js's UMD build and stock TF.js, served from node_modules: no CDN at run time.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiProblem } from '../errors.js';
import { Problem } from '../schemas.js';

/** The public folder sits next to this module in src/; from dist/ it is found back in the source tree. */
export function dashboardPublicDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const root = here.includes('/dist/')
    ? new URL('../../../../', import.meta.url)
    : new URL('../../../', import.meta.url);
  return join(fileURLToPath(root), 'src', 'http', 'dashboard', 'public');
}

/** `vendor/<name>` → the file in node_modules, resolved the way Node resolves the packages themselves. */
function vendorFiles(): Map<string, { dir: string; file: string }> {
  const require = createRequire(import.meta.url);
  // chart.js's exports map hides dist/ subpaths; its main entry sits next to the UMD build.
  const chartDir = dirname(require.resolve('chart.js'));
  const tfDir = dirname(require.resolve('@tensorflow/tfjs'));
  return new Map([
    ['vendor/chart.umd.js', { dir: chartDir, file: 'chart.umd.min.js' }],
    ['vendor/tf.min.js', { dir: tfDir, file: 'tf.min.js' }],
  ]);
}

const publicFile = /^[a-z0-9-]+\.(js|css|svg)$/;

export async function dashboardStatic(app: FastifyInstance): Promise<void> {
  const publicDir = dashboardPublicDir();
  const vendor = vendorFiles();
  await app.register(fastifyStatic, { root: publicDir, serve: false, cacheControl: true, maxAge: 0 });

  app.get('/', { schema: { summary: 'The dashboard', hide: true } }, (_request, reply) =>
    reply.header('cache-control', 'no-cache').sendFile('index.html', publicDir),
  );

  app.get<{ Params: { '*': string } }>(
    '/dashboard/*',
    {
      schema: {
        summary: 'Dashboard assets',
        hide: true,
        params: Type.Object({ '*': Type.String() }),
        response: { 404: Problem },
      },
    },
    (request, reply) => {
      const path = request.params['*'];
      const library = vendor.get(path);
      if (library) return reply.header('cache-control', 'public, max-age=86400').sendFile(library.file, library.dir);
      if (!publicFile.test(path)) throw new ApiProblem('not-found', `no dashboard file ${path}`);
      return reply.header('cache-control', 'no-cache').sendFile(path, publicDir);
    },
  );
}
