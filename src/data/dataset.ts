import {KilnError} from '../errors.js'
import type {DatasetSpec} from '../stages/types.js'
import type {NpyArray} from './npy.js'
import {readNpz} from './npy.js'

/** One model input's values for a batch, shaped like an onnxruntime tensor. */
export interface BatchTensor {
  /** onnxruntime type name: float32, uint8, int64... */
  type: string
  data: NpyArray['data']
  dims: number[]
}

export interface Batch {
  /** Model input name → tensor (first dim = batch size). */
  inputs: Record<string, BatchTensor>
  /** Class labels (or regression targets), one per sample, when the dataset has them. */
  labels?: Float64Array
  size: number
}

/** What kiln knows of a model input, to map and check dataset fields against. */
export interface InputMeta {
  name: string
  type: string
  dims: (number | string)[]
}

export interface ReadOptions {
  batchSize: number
  /** The model's inputs: used to map fields by name and to check shapes. */
  inputs?: InputMeta[]
  signal?: AbortSignal
}

const ORT_TYPE: Record<string, string> = {
  f4: 'float32',
  f8: 'float64',
  i1: 'int8',
  u1: 'uint8',
  b1: 'bool',
  i2: 'int16',
  u2: 'uint16',
  i4: 'int32',
  u4: 'uint32',
  i8: 'int64',
  u8: 'uint64',
}

export function ortTypeOf(npyDtype: string): string {
  return ORT_TYPE[npyDtype.replace(/^[<|=]/, '')] ?? npyDtype
}

/**
 * Read a dataset in batches. This first reader covers NPZ/NPY; other formats plug in here behind the
 * same API. Field mapping: `spec.inputs` (model input → field); with none, fields named after the
 * model's inputs; a single-input model takes the only non-label field. Labels: `spec.labels`, else a
 * `label`/`labels` field.
 */
export async function* readBatches(spec: DatasetSpec, options: ReadOptions): AsyncGenerator<Batch> {
  const arrays = await readNpz(spec.path)
  const labelField = spec.labels ?? ['labels', 'label'].find((n) => arrays.has(n))
  const mapping = resolveMapping(spec, [...arrays.keys()].filter((k) => k !== labelField), options.inputs)
  const fields = Object.entries(mapping).map(([input, field]) => {
    const arr = arrays.get(field)
    if (!arr) throw new KilnError(`dataset '${spec.name}': no field '${field}' (for input '${input}'); fields: ${[...arrays.keys()].join(', ')}`, {code: 'E_DATA'})
    return {input, arr}
  })
  const total = Math.min(...fields.map((f) => f.arr.shape[0] ?? 1), spec.limit ?? Number.POSITIVE_INFINITY)
  if (!Number.isFinite(total) || total <= 0) throw new KilnError(`dataset '${spec.name}' is empty`, {code: 'E_DATA'})
  const labels = labelField ? arrays.get(labelField) : undefined
  if (spec.labels && !labels) throw new KilnError(`dataset '${spec.name}': no labels field '${spec.labels}'`, {code: 'E_DATA'})
  for (const {input, arr} of fields) checkShape(spec, input, arr, options.inputs)
  for (let start = 0; start < total; start += options.batchSize) {
    if (options.signal?.aborted) throw new KilnError('cancelled', {code: 'E_ABORTED'})
    const size = Math.min(options.batchSize, total - start)
    const inputs: Record<string, BatchTensor> = {}
    for (const {input, arr} of fields) {
      const per = arr.shape.slice(1).reduce((a, b) => a * b, 1)
      inputs[input] = {type: ortTypeOf(arr.dtype), data: arr.data.subarray(start * per, (start + size) * per) as BatchTensor['data'], dims: [size, ...arr.shape.slice(1)]}
    }
    const batch: Batch = {inputs, size}
    if (labels) batch.labels = Float64Array.from(labels.data.subarray(start, start + size) as ArrayLike<number>, Number)
    yield batch
  }
}

function resolveMapping(spec: DatasetSpec, fields: string[], inputs?: InputMeta[]): Record<string, string> {
  if (spec.inputs && Object.keys(spec.inputs).length > 0) return spec.inputs
  if (inputs) {
    const byName = inputs.filter((i) => fields.includes(i.name))
    if (byName.length === inputs.length) return Object.fromEntries(inputs.map((i) => [i.name, i.name]))
    if (inputs.length === 1 && fields.length === 1) return {[inputs[0]!.name]: fields[0]!}
    const missing = inputs.filter((i) => !fields.includes(i.name)).map((i) => i.name)
    throw new KilnError(`dataset '${spec.name}' has no field for model input(s) ${missing.join(', ')}; fields: ${fields.join(', ')}`, {
      code: 'E_DATA',
      tryMessage: `Map them in the pipeline file: datasets.${spec.name}.inputs: { ${missing[0]}: <field> }`,
    })
  }
  if (fields.length === 1) return {input: fields[0]!}
  throw new KilnError(`dataset '${spec.name}': cannot tell which fields are model inputs; map them with 'inputs:'`, {code: 'E_DATA'})
}

function checkShape(spec: DatasetSpec, input: string, arr: NpyArray, inputs?: InputMeta[]): void {
  const meta = inputs?.find((i) => i.name === input)
  if (!meta) return
  const want = meta.dims.slice(1)
  const got = arr.shape.slice(1)
  const ok = want.length === got.length && want.every((d, i) => typeof d !== 'number' || d < 0 || d === got[i])
  if (!ok) {
    throw new KilnError(`dataset '${spec.name}': field for input '${input}' has sample shape [${got.join(',')}], the model expects [${want.join(',')}]`, {
      code: 'E_DATA_SHAPE',
      tryMessage: 'Reshape the data, or add preprocessing (resize, layout) in the dataset entry.',
    })
  }
  const type = ortTypeOf(arr.dtype)
  if (meta.type && meta.type !== type) {
    throw new KilnError(`dataset '${spec.name}': field for input '${input}' is ${type}, the model expects ${meta.type}`, {
      code: 'E_DATA_TYPE',
      tryMessage: "Convert the data, or set preprocess.dtype in the dataset entry.",
    })
  }
}
