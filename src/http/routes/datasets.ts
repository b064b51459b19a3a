/**
 * /v1/datasets: part `x` (a .npy) with an optional part `y`, or one JSON file `{x, y}` of nested arrays.
 * Shapes and dtypes are checked here (x and y must agree on the sample count) before anything is stored.
 */
import type { FastifyInstance } from 'fastify';
import { newId } from '../../storage/records.js';
import { NpyError, nestedShape, parseNpyHeader } from '../../storage/npy.js';
import type { ArrayInfo, DatasetRecord } from '../../storage/types.js';
import { ApiProblem } from '../errors.js';
import { Dataset, problemResponses, Problem } from '../schemas.js';
import { receiveUpload, type Upload, type UploadedFile } from '../upload.js';

function invalid(error: unknown): never {
  if (error instanceof NpyError) throw new ApiProblem('invalid-dataset', error.message);
  throw error;
}

async function fromNpy(upload: Upload, file: UploadedFile, label: string): Promise<ArrayInfo> {
  try {
    const header = parseNpyHeader(new Uint8Array(await upload.contents(file)));
    if (header.shape.length === 0) throw new NpyError(`${label}: a scalar is not a dataset`);
    return { dtype: header.dtype, shape: header.shape, sha256: file.sha256, bytes: file.bytes, encoding: 'npy' };
  } catch (error) {
    if (error instanceof NpyError) throw new NpyError(`${label}: ${error.message.replace(`${label}: `, '')}`);
    throw error;
  }
}

export async function datasetRoutes(app: FastifyInstance): Promise<void> {
  const { records, blobs, config } = app.services;

  app.post(
    '/v1/datasets',
    {
      schema: {
        summary: 'Upload a dataset',
        consumes: ['multipart/form-data'],
        response: { 201: Dataset, 413: Problem, 415: Problem, 422: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const upload = await receiveUpload(request, blobs, config.upload);
      app.metrics.bytesUploaded.inc(upload.totalBytes);
      try {
        const pick = (name: string) =>
          upload.files.find((f) => f.field === name || f.path === `${name}.npy`);
        const xFile = pick('x');
        const json = upload.files.find((f) => f.path.toLowerCase().endsWith('.json'));
        let x: ArrayInfo;
        let y: ArrayInfo | null = null;
        if (xFile) {
          x = await fromNpy(upload, xFile, 'x').catch(invalid);
          const yFile = pick('y');
          if (yFile) y = await fromNpy(upload, yFile, 'y').catch(invalid);
        } else if (json) {
          let body: { x?: unknown; y?: unknown };
          try {
            body = JSON.parse((await upload.contents(json)).toString('utf8'));
          } catch (error) {
            throw new ApiProblem('invalid-dataset', `${json.path} is not JSON: ${(error as Error).message}`);
          }
          const info = (value: unknown, label: string): ArrayInfo => {
            try {
              return { dtype: 'float32', shape: nestedShape(value, `/${label}`), sha256: json.sha256, bytes: json.bytes, encoding: 'json' };
            } catch (error) {
              return invalid(error);
            }
          };
          x = info(body?.x, 'x');
          if (body.y !== undefined && body.y !== null) y = info(body.y, 'y');
        } else {
          throw new ApiProblem('invalid-upload', 'send part x (a .npy) [+ part y], or one JSON file {x, y}');
        }
        if (y && y.shape[0] !== x.shape[0]) {
          throw new ApiProblem('invalid-dataset', `x has ${x.shape[0]} samples but y has ${y.shape[0]}`);
        }
        const used = upload.files.filter((f) => f.sha256 === x.sha256 || f.sha256 === y?.sha256);
        await upload.commit(used);
        const record: DatasetRecord = {
          id: newId('datasets'),
          tenant: request.tenant,
          samples: x.shape[0],
          x,
          y,
          bytes: used.reduce((sum, f) => sum + f.bytes, 0),
          createdAt: new Date().toISOString(),
        };
        await records.create('datasets', record);
        return reply.code(201).header('location', `/v1/datasets/${record.id}`).send(record);
      } finally {
        await upload.discard();
      }
    },
  );
}
