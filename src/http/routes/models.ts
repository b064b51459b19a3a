/**
 * /v1/models: upload (multipart files or one archive, streamed to staged files and validated from disk by
 * `validateModelFiles` before any record exists, so a model's size never becomes the server's memory; a
 * Keras `.keras` / `.h5` is converted to a TF.js layers model and that is what is stored; text fields
 * `name` and `labels`), list (filtered by name and labels), show, rename/relabel, delete (refused while a job
 * still needs the model). An upload whose files the tenant already has as a model (same paths, same
 * sha256s) answers 200 with that model, unchanged: `qaas submit` run twice makes one record.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { deleteInput } from '../../jobs/inputs.js';
import { metadataFromFields, MetadataPatchSchema, patchRecordMetadata } from '../../jobs/metadata.js';
import { modelInputs, modelOutputs } from '../../model/signature.js';
import { convertFoundKeras, findKerasModel } from '../../model/keras/index.js';
import { readModel } from '../../model/read.js';
import { validateModelFiles, type DiskFileSet, type ModelSummary } from '../../model/validate-stream.js';
import { isId, newId } from '../../storage/records.js';
import type { ModelRecord, ModelSource, StoredFile } from '../../storage/types.js';
import { ApiProblem } from '../errors.js';
import {
  IdParams,
  listFilter,
  ListWithMetadataQuery,
  Model,
  pageOf,
  Problem,
  problemResponses,
  servablePage,
} from '../schemas.js';
import { receiveUpload, type UploadedFile } from '../upload.js';

function modelIdentity(files: StoredFile[]): string {
  const lines = [...files].sort((a, b) => a.path.localeCompare(b.path)).map((f) => `${f.path}\0${f.sha256}\n`);
  return createHash('sha256').update(lines.join('')).digest('hex');
}

/** The model's files relative to the directory that holds model.json (archives often wrap it in a folder). */
function rootAtModelJson(files: UploadedFile[]): { root: string; files: UploadedFile[] } {
  const manifests = files.filter((file) => posix.basename(file.path) === 'model.json');
  if (manifests.length === 0) {
    throw new ApiProblem('invalid-upload', 'no model.json among the uploaded files', { file: 'model.json' });
  }
  if (manifests.length > 1) {
    throw new ApiProblem('invalid-upload', `more than one model.json: ${manifests.map((m) => m.path).join(', ')}`);
  }
  const root = posix.dirname(manifests[0].path);
  const prefix = root === '.' ? '' : `${root}/`;
  return {
    root,
    files: files
      .filter((file) => file.path.startsWith(prefix))
      .map((file) => ({ ...file, path: file.path.slice(prefix.length) })),
  };
}

export const modelRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { records, blobs, config } = app.services;

  app.post(
    '/v1/models',
    {
      schema: {
        summary: 'Upload a TF.js or Keras model',
        consumes: ['multipart/form-data'],
        response: { 200: Model, 201: Model, 413: Problem, 415: Problem, 422: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      const upload = await receiveUpload(request, blobs, config.upload);
      app.metrics.bytesUploaded.inc(upload.totalBytes);
      try {
        const metadata = metadataFromFields(upload.fields);
        const keras = findKerasModel(upload.files.map((file) => file.path));
        let model: ModelSummary;
        let storedFiles: StoredFile[];
        let source: ModelSource | undefined;
        if (keras) {
          // Keras files are converted in memory (HDF5 is read whole); the converted files are what is stored.
          const byPath = new Map(upload.files.map((file) => [file.path, file]));
          const converted = await convertFoundKeras(keras, async (path) => {
            const file = byPath.get(path);
            return file && upload.contents(file);
          });
          model = readModel(converted.files);
          storedFiles = await Promise.all(
            [...converted.files].map(async ([path, bytes]) => ({ path, ...(await blobs.putBytes(bytes)) })),
          );
          source = { format: converted.format, kerasVersion: converted.kerasVersion };
        } else {
          const { files } = rootAtModelJson(upload.files);
          const staged: DiskFileSet = new Map(files.map((file) => [file.path, file.stagedPath]));
          model = await validateModelFiles(staged);
          await upload.commit(files);
          storedFiles = files.map(({ path, sha256, bytes }) => ({ path, sha256, bytes }));
        }
        const record: ModelRecord = {
          id: newId('models'),
          tenant: request.tenant,
          ...metadata,
          format: model.format,
          params: model.weights.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0),
          bytes: storedFiles.reduce((sum, f) => sum + f.bytes, 0),
          sha256: modelIdentity(storedFiles),
          tensors: model.weights.map((w) => ({ name: w.name, shape: w.shape, dtype: w.dtype })),
          inputs: modelInputs(model.modelJson),
          outputs: modelOutputs(model.modelJson),
          files: storedFiles,
          ...(source && { source }),
          createdAt: new Date().toISOString(),
        };
        const { created, record: stored } = await records.createOrFind('models', record);
        request.log.info(
          { modelId: stored.id, bytes: stored.bytes },
          created ? 'model stored' : 'model already stored',
        );
        return reply
          .code(created ? 201 : 200)
          .header('location', `/v1/models/${stored.id}`)
          .send(stored);
      } finally {
        await upload.discard();
      }
    },
  );

  app.get(
    '/v1/models',
    {
      schema: {
        summary: 'List models',
        querystring: ListWithMetadataQuery,
        response: { 200: pageOf(Model), ...problemResponses },
      },
    },
    async (request, reply) => {
      return servablePage(reply, Model, await records.list('models', request.tenant, listFilter(request.query)));
    },
  );

  app.get(
    '/v1/models/:id',
    { schema: { summary: 'Show a model', params: IdParams, response: { 200: Model, ...problemResponses } } },
    async (request) => {
      const { id } = request.params;
      const record = isId('models', id) ? await records.get('models', request.tenant, id) : null;
      if (!record) throw new ApiProblem('not-found', `no model ${id}`);
      return record;
    },
  );

  app.patch(
    '/v1/models/:id',
    {
      schema: {
        summary: 'Rename or relabel a model',
        params: IdParams,
        body: MetadataPatchSchema,
        response: { 200: Model, ...problemResponses },
      },
    },
    async (request) => {
      const { id } = request.params;
      const record = await patchRecordMetadata(records, 'models', request.tenant, id, request.body);
      if (!record) throw new ApiProblem('not-found', `no model ${id}`);
      return record;
    },
  );

  app.delete(
    '/v1/models/:id',
    {
      schema: {
        summary: 'Delete a model',
        params: IdParams,
        response: { 204: Type.Null(), 409: Problem, ...problemResponses },
      },
    },
    async (request, reply) => {
      await deleteInput(app.services, 'models', request.tenant, request.params.id);
      return reply.code(204).send(null);
    },
  );
};
