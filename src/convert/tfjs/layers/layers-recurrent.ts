import {DataType} from '../../../onnx/proto.js'
import type {LayerContext, LayerConverter} from './context.js'
import {layerError} from './context.js'

const RNN_ACTIVATIONS: Record<string, string> = {
  sigmoid: 'Sigmoid',
  hard_sigmoid: 'HardSigmoid',
  hardSigmoid: 'HardSigmoid',
  tanh: 'Tanh',
  relu: 'Relu',
}

function rnnActivation(ctx: LayerContext, name: string | undefined, fallback: string): string {
  const a = RNN_ACTIVATIONS[name ?? fallback]
  if (!a) throw layerError(ctx, `activation '${name}' inside a recurrent layer`)
  return a
}

/**
 * Reorder and transpose a Keras gate-concatenated matrix [in, G*u] into ONNX's [1, G*u, in] with the
 * gates in `order` (indices into the Keras gate blocks).
 */
function gateMatrix(data: Float32Array, rows: number, units: number, order: number[]): Float32Array {
  const g = order.length
  const out = new Float32Array(g * units * rows)
  for (let og = 0; og < g; og++) {
    const kg = order[og]!
    for (let j = 0; j < units; j++) for (let r = 0; r < rows; r++) out[(og * units + j) * rows + r] = data[r * g * units + kg * units + j]!
  }
  return out
}

function gateVector(data: Float32Array, units: number, order: number[]): Float32Array {
  const out = new Float32Array(order.length * units)
  order.forEach((kg, og) => out.set(data.subarray(kg * units, (kg + 1) * units), og * units))
  return out
}

function recurrent(ctx: LayerContext, kind: 'LSTM' | 'GRU'): ReturnType<LayerConverter> {
  const {b, cfg, hint} = ctx
  const x = b.logical(ctx.inputs[0]!)
  if (x.shape?.length !== 3) throw layerError(ctx, 'an input that is not [batch, time, features]')
  if (cfg.go_backwards) throw layerError(ctx, 'go_backwards')
  if (cfg.return_state) throw layerError(ctx, 'return_state')
  if (ctx.inputs.length > 1) throw layerError(ctx, 'initial states passed as inputs')
  const units: number = cfg.units
  const k = ctx.need('kernel')
  const rk = ctx.need('recurrent_kernel')
  const inDim = k.shape[0]!
  // Keras LSTM gates are i,f,c,o and ONNX wants i,o,f,c; GRU is z,r,h in both.
  const order = kind === 'LSTM' ? [0, 3, 1, 2] : [0, 1, 2]
  const g = order.length
  const W = b.constant(`${hint}_W`, gateMatrix(k.data as Float32Array, inDim, units, order), [1, g * units, inDim])
  const R = b.constant(`${hint}_R`, gateMatrix(rk.data as Float32Array, units, units, order), [1, g * units, units])
  const bias = new Float32Array(2 * g * units)
  if (cfg.use_bias !== false) {
    const bw = ctx.need('bias')
    if (bw.shape.length !== 1) throw layerError(ctx, 'reset_after (two bias vectors)')
    bias.set(gateVector(bw.data as Float32Array, units, order), 0)
  }
  const B = b.constant(`${hint}_B`, bias, [1, 2 * g * units])
  const f = rnnActivation(ctx, cfg.recurrent_activation, 'hard_sigmoid')
  const act = rnnActivation(ctx, cfg.activation, 'tanh')
  const activations = kind === 'LSTM' ? [f, act, act] : [f, act]
  const [n, t] = [x.shape[0]!, x.shape[1]!]
  // onnxruntime implements only the time-major layout: [T, N, F] in, [T, 1, N, h] out.
  const attrs = {hidden_size: units, activations, linear_before_reset: kind === 'GRU' ? 0 : undefined}
  const tm = b.op('Transpose', [x.name], {perm: [1, 0, 2]}, {hint: `${hint}_tnf`, dtype: x.dtype})
  const outs = b.opMulti(kind, [tm.name, W.name, R.name, B.name], attrs, [
    {hint: `${hint}_Y`, dtype: DataType.FLOAT},
    {hint: `${hint}_Yh`, dtype: DataType.FLOAT},
  ])
  if (cfg.return_sequences) {
    const y = b.op('Squeeze', [outs[0]!.name, b.i64(`${hint}_axes`, [1])], {}, {hint: `${hint}_tnh`, dtype: DataType.FLOAT})
    return [b.op('Transpose', [y.name], {perm: [1, 0, 2]}, {hint, dtype: DataType.FLOAT, shape: [n, t, units]})]
  }
  return [b.op('Squeeze', [outs[1]!.name, b.i64(`${hint}_axes`, [0])], {}, {hint, dtype: DataType.FLOAT, shape: [n, units]})]
}

export const lstm: LayerConverter = (ctx) => recurrent(ctx, 'LSTM')
export const gru: LayerConverter = (ctx) => recurrent(ctx, 'GRU')
