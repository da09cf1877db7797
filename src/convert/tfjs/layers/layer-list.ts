import type {LayerConverter} from './context.js'
import {batchNorm, conv2d, conv2dTranspose, cropping2d, globalPooling, pooling2d, separableConv2d, upSampling2d, zeroPadding2d} from './layers-conv.js'
import {activationClassLayer, activationLayer, concatenate, dense, embedding, flatten, identityLayer, inputLayer, merge, permute, repeatVector, reshapeLayer} from './layers-core.js'
import {gru, lstm} from './layers-recurrent.js'

/**
 * Keras layer classes the converter knows, as data: class name → converter. Nested models
 * (Sequential, Model, Functional) are handled by the topology walker itself.
 */
export const LAYER_LIST: Record<string, LayerConverter> = {
  InputLayer: inputLayer,
  Dense: dense,
  Conv2D: conv2d,
  DepthwiseConv2D: conv2d,
  SeparableConv2D: separableConv2d,
  Conv2DTranspose: conv2dTranspose,
  BatchNormalization: batchNorm,
  Activation: activationLayer,
  ReLU: activationClassLayer,
  LeakyReLU: activationClassLayer,
  PReLU: activationClassLayer,
  ELU: activationClassLayer,
  ThresholdedReLU: activationClassLayer,
  Softmax: activationClassLayer,
  MaxPooling2D: pooling2d,
  AveragePooling2D: pooling2d,
  MaxPool2D: pooling2d,
  AvgPool2D: pooling2d,
  GlobalAveragePooling2D: globalPooling,
  GlobalMaxPooling2D: globalPooling,
  GlobalAveragePooling1D: globalPooling,
  GlobalMaxPooling1D: globalPooling,
  GlobalAvgPool2D: globalPooling,
  GlobalMaxPool2D: globalPooling,
  Add: merge,
  Multiply: merge,
  Average: merge,
  Maximum: merge,
  Minimum: merge,
  Concatenate: concatenate,
  Reshape: reshapeLayer,
  Flatten: flatten,
  Permute: permute,
  RepeatVector: repeatVector,
  ZeroPadding2D: zeroPadding2d,
  Cropping2D: cropping2d,
  UpSampling2D: upSampling2d,
  Dropout: identityLayer,
  SpatialDropout1D: identityLayer,
  SpatialDropout2D: identityLayer,
  AlphaDropout: identityLayer,
  GaussianDropout: identityLayer,
  GaussianNoise: identityLayer,
  Embedding: embedding,
  LSTM: lstm,
  GRU: gru,
}

export const NESTED_MODEL_CLASSES = new Set(['Sequential', 'Model', 'Functional'])
