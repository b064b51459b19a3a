/**
 * The import rules `npm run lint` checks (dependency-cruiser): no cycles, and dependencies point inward,
 * toward the engine. Type-only imports count: a cycle of types is still two modules that cannot be read
 * apart.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-cycle',
      severity: 'error',
      comment: 'A module must not reach itself through its imports.',
      from: { path: '^(src|workers)/' },
      to: { circular: true },
    },
    {
      name: 'quant-is-pure',
      severity: 'error',
      comment:
        'src/quant is pure math over arrays and tensors: no HTTP, Redis, files, job queue or model I/O. ' +
        'What it shares with them lives in src/quant (or src/errors.ts) and they import it.',
      from: { path: '^src/quant/' },
      to: { path: '^(src/(http|storage|jobs|model|pipeline|client|service|cli|config)|workers)(/|\\.ts$)' },
    },
    {
      name: 'pipeline-knows-no-service',
      severity: 'error',
      comment: 'src/pipeline drives the engine for a job; HTTP, storage and the worker call it, not the reverse.',
      from: { path: '^src/pipeline/' },
      to: { path: '^(src/(http|storage|service|cli)|workers)(/|\\.ts$)' },
    },
    {
      name: 'jobs-are-framework-neutral',
      severity: 'error',
      comment:
        'src/jobs holds the use cases (submit, view, inputs) HTTP, the CLI and the worker share: no Fastify in it.',
      from: { path: '^src/jobs/' },
      to: { path: '^(src/http/|workers/|node_modules/(fastify|@fastify)/)' },
    },
    {
      name: 'routes-read-through-stores',
      severity: 'error',
      comment: 'Route handlers reach files through src/storage (blobs, artifacts), never node:fs themselves.',
      from: { path: '^src/http/(routes|dashboard)/' },
      to: { dependencyTypes: ['core'], path: '^(node:)?fs(/promises)?$' },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to nothing is a typo or a moved file.',
      from: { path: '^(src|workers)/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
    exclude: { path: '^src/http/dashboard/public/' },
  },
};
