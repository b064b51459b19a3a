/**
 * Which kernel trainer a tensor gets under QAT: SteKernel (./kernel.ts) for a PTQ method, else the training
 * method's own. Kept apart from the contract in ./kernel.ts, which the four training kernels implement.
 */
import type { MethodParams } from '../methods/index.js';
import { getMethod } from '../methods/index.js';
import type { QuantMethod } from '../types.js';
import { AdmmKernel } from './admm.js';
import { InqKernel } from './inq.js';
import { SteKernel, type KernelSetup, type KernelTrainer } from './kernel.js';
import { LabKernel } from './lab.js';
import type { TrainingMethodParams } from './methods.js';
import { TtqKernel } from './ttq.js';

export function createKernelTrainer(
  params: MethodParams,
  training: TrainingMethodParams | undefined,
  setup: KernelSetup,
  method?: QuantMethod,
): KernelTrainer {
  if (training === undefined) return new SteKernel(method ?? getMethod(params.name), params, setup.shape, setup.ste);
  switch (training.name) {
    case 'lab':
      return new LabKernel(training, setup);
    case 'ttq':
      return new TtqKernel(training, setup);
    case 'inq':
      return new InqKernel(training, setup);
    case 'admm':
      return new AdmmKernel(training, setup);
  }
}
