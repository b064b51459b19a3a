/**
 * The PTQ methods' names, in the registry's order (index.ts checks that they are its keys). Apart from the
 * registry so that the CLI's help can list them without loading every method and its TypeBox schema.
 */
const names = ['affine', 'float16', 'binary', 'ternary', 'pow2', 'kmeans', 'pq'] as const;

export type MethodName = (typeof names)[number];

export const methodNames: MethodName[] = [...names];
