/**
 * /v1/datasets: upload (part `x` as a .npy with an optional part `y`, one `.npz` holding x and y, or one JSON
 * file `{x, y}` of nested arrays; for a multi-input model one .npy part per input named by it, an .npz of
 * arrays named by the inputs, or JSON x as an object of them), list, show, delete (refused while an
 * unfinished job names the dataset).
 * Uploads are checked from the .npy headers alone (dtype, C order, shape against the file size, x and y
 * agreeing on the sample count); only JSON, which is capped and small, is parsed whole. Text fields `name` and
 * `labels` as for models, list filters and PATCH alike; an upload of arrays the tenant already has as a
 * dataset (the same blobs in the same roles) answers 200 with that dataset, unchanged.
 */
import { createHash } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { deleteInput } from '../../jobs/inputs.js';
import { metadataFromFields, MetadataPatchSchema, patchRecordMetadata } from '../../jobs/metadata.js';
import {
  DatasetError,
  JSON_DATASET_MAX_BYTES,
  checkDatasetShapes,
  checkInputShapes,
  parseJsonDataset,
} from '../../model/dataset/index.js';
import { readNpyHeader } from '../../model/dataset/npy.js';
import { NpzFile } from '../../model/dataset/npz.js';
import { isId, newId } from '../../storage/records.js';
import type { ArrayInfo, DatasetRecord } from '../../storage/types.js';
import { ApiProblem } from '../errors.js';
import {
  Dataset,
  IdParams,
  listFilter,
  ListWithMetadataQuery,
  pageOf,
  Problem,
  problemResponses,
  servablePage,
} from '../schemas.js';
import { receiveUpload, type Upload, type UploadedFile } from '../upload.js';

/** Parse errors (422s, as every DatasetError) name the part they came from. */
async function checked<T>(label: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (label && error instanceof DatasetError) throw new DatasetError(`${label}: ${error.message}`);
    throw error;
  }
}

async function fromNpy(file: UploadedFile, label: string): Promise<ArrayInfo> {
  const header = await checked(label, () => readNpyHeader(file.stagedPath));
  return { dtype: header.descr, shape: header.shape, sha256: file.sha256, bytes: file.bytes, encoding: 'npy' };
}

/** A dataset's arrays: one x, or one named array per model input. */
type Arrays = { x: ArrayInfo | null; inputs?: NamedArray[]; y: ArrayInfo | null };
type NamedArray = ArrayInfo & { name: string };

async function fromNpz(file: UploadedFile): Promise<Arrays> {
  const npz = await checked(file.path, () => NpzFile.open(file.stagedPath));
  npz.close();
  const info = (header: { descr: string; shape: number[] }): ArrayInfo => ({
    dtype: header.descr,
    shape: header.shape,
    sha256: file.sha256,
    bytes: file.bytes,
    encoding: 'npz',
  });
  const y = npz.y ? info(npz.y.header) : null;
  if (npz.inputs) {
    return { x: null, inputs: npz.inputs.map((a) => ({ name: a.entry.replace(/\.npy$/, ''), ...info(a.header) })), y };
  }
  return { x: info(npz.x.header), y };
}

async function fromJson(upload: Upload, file: UploadedFile): Promise<Arrays> {
  if (file.bytes > JSON_DATASET_MAX_BYTES) {
    throw new ApiProblem(
      'invalid-dataset',
      `${file.path} is ${file.bytes} bytes; JSON datasets are parsed whole and capped at ${JSON_DATASET_MAX_BYTES} bytes — send .npy or .npz instead`,
    );
  }
  const dataset = await checked('', async () =>
    parseJsonDataset((await upload.contents(file)).toString('utf8'), file.path),
  );
  await dataset.close();
  const info = (sampleShape: number[]): ArrayInfo => ({
    dtype: dataset.x.dtype,
    shape: [dataset.samples, ...sampleShape],
    sha256: file.sha256,
    bytes: file.bytes,
    encoding: 'json',
  });
  const y = dataset.y ? info(dataset.y.sampleShape) : null;
  if (dataset.inputs)
    return { x: null, inputs: dataset.inputs.map((a) => ({ name: a.name, ...info(a.sampleShape) })), y };
  return { x: info(dataset.x.sampleShape), y };
}

/** sha256 over the arrays' roles, encodings and blobs: the same data sent the same way is the same dataset. */
function datasetIdentity({ x, inputs, y }: Arrays): string {
  const line = (role: string, a: ArrayInfo) => `${role}\0${a.encoding}\0${a.sha256}\n`;
  const lines = [
    ...(x ? [line('x', x)] : []),
    ...(inputs ?? []).map((a) => line(`input:${a.name}`, a)).sort(),
    ...(y ? [line('y', y)] : []),
  ];
  return createHash('sha256').update(lines.join('')).digest('hex');
}

/** .npy parts named by the model's inputs (any part that is not x or y), each one input's array. */
async function fromNamedNpy(files: UploadedFile[]): Promise<NamedArray[]> {
  const inputs: NamedArray[] = [];
  for (const file of files) inputs.push({ name: file.field, ...(await fromNpy(file, file.field)) });
  return inputs;
}

export const datasetRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { records, blobs, config } = app.services;

  app.post(
    '/v1/datasets',
    {
      schema: {
        summary: 'Upload a dataset',
        consumes: ['multipart/form-data'],
        response: { 200: Dataset, 201: Dataset, 413: Problem, 415: Problem, 422: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const upload = await receiveUpload(request, blobs, config.upload);
      app.metrics.bytesUploaded.inc(upload.totalBytes);
      try {
        const metadata = metadataFromFields(upload.fields);
        const pick = (name: string) => upload.files.find((f) => f.field === name || f.path === `${name}.npy`);
        const xFile = pick('x');
        const yFile = pick('y');
        const npz = upload.files.find((f) => f.path.toLowerCase().endsWith('.npz'));
        const json = upload.files.find((f) => f.path.toLowerCase().endsWith('.json'));
        const namedNpy = upload.files.filter((f) => f.path.toLowerCase().endsWith('.npy') && f !== yFile);
        let arrays: Arrays;
        if (xFile && !xFile.path.toLowerCase().endsWith('.npz')) {
          arrays = { x: await fromNpy(xFile, 'x'), y: yFile ? await fromNpy(yFile, 'y') : null };
        } else if (npz) {
          arrays = await fromNpz(npz);
        } else if (json) {
          arrays = await fromJson(upload, json);
        } else if (namedNpy.length > 0) {
          arrays = { x: null, inputs: await fromNamedNpy(namedNpy), y: yFile ? await fromNpy(yFile, 'y') : null };
        } else {
          throw new ApiProblem(
            'invalid-upload',
            'send part x (a .npy) [+ part y], one .npy part per model input named by it [+ y], one .npz, or one JSON file {x, y}',
          );
        }
        const { x, inputs, y } = arrays;
        await checked('', async () =>
          inputs
            ? checkInputShapes(
                inputs.map((a) => ({ name: a.name, shape: a.shape })),
                y?.shape,
              )
            : checkDatasetShapes(x!.shape, y?.shape),
        );
        const arrayBlobs = new Set([...(inputs ?? [x!]), ...(y ? [y] : [])].map((a) => a.sha256));
        const used = upload.files.filter((f) => arrayBlobs.has(f.sha256));
        await upload.commit(used);
        const record: DatasetRecord & { sha256: string } = {
          id: newId('datasets'),
          tenant: request.tenant,
          ...metadata,
          samples: (inputs?.[0] ?? x!).shape[0],
          x,
          ...(inputs ? { inputs } : {}),
          y,
          bytes: [...new Map(used.map((f) => [f.sha256, f.bytes])).values()].reduce((sum, bytes) => sum + bytes, 0),
          sha256: datasetIdentity(arrays),
          createdAt: new Date().toISOString(),
        };
        const { created, record: stored } = await records.createOrFind('datasets', record);
        request.log.info(
          { datasetId: stored.id, samples: stored.samples },
          created ? 'dataset stored' : 'dataset already stored',
        );
        return reply
          .code(created ? 201 : 200)
          .header('location', `/v1/datasets/${stored.id}`)
          .send(stored);
      } finally {
        await upload.discard();
      }
    },
  );

  app.get(
    '/v1/datasets',
    {
      schema: {
        summary: 'List datasets',
        querystring: ListWithMetadataQuery,
        response: { 200: pageOf(Dataset), ...problemResponses },
      },
    },
    async (request, reply) => {
      return servablePage(reply, Dataset, await records.list('datasets', request.tenant, listFilter(request.query)));
    },
  );

  app.get(
    '/v1/datasets/:id',
    { schema: { summary: 'Show a dataset', params: IdParams, response: { 200: Dataset, ...problemResponses } } },
    async (request) => {
      const { id } = request.params;
      const record = isId('datasets', id) ? await records.get('datasets', request.tenant, id) : null;
      if (!record) throw new ApiProblem('not-found', `no dataset ${id}`);
      return record;
    },
  );

  app.patch(
    '/v1/datasets/:id',
    {
      schema: {
        summary: 'Rename or relabel a dataset',
        params: IdParams,
        body: MetadataPatchSchema,
        response: { 200: Dataset, ...problemResponses },
      },
    },
    async (request) => {
      const { id } = request.params;
      const record = await patchRecordMetadata(records, 'datasets', request.tenant, id, request.body);
      if (!record) throw new ApiProblem('not-found', `no dataset ${id}`);
      return record;
    },
  );

  app.delete(
    '/v1/datasets/:id',
    {
      schema: {
        summary: 'Delete a dataset',
        params: IdParams,
        response: { 204: Type.Null(), 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      await deleteInput(app.services, 'datasets', request.tenant, request.params.id);
      return reply.code(204).send(null);
    },
  );
};
