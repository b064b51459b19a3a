import * as tf from '@tensorflow/tfjs';
import { expect, it } from 'vitest';
import { REGISTERED_LAYER_CLASSES } from '../../src/model/layer-classes.js';
import '../../src/pipeline/run.js';

it('the fixed class list is tfjs’s registry once the engine has registered its own layers', () => {
  const registered = Object.keys(tf.serialization.SerializationMap.getMap().classNameMap).sort();
  expect([...REGISTERED_LAYER_CLASSES].sort()).toEqual(registered);
});
