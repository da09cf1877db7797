import {KilnError} from '../../errors.js'
import {makeNode, makeValueInfo} from '../../onnx/build.js'
import type {AttrValue} from '../../onnx/build.js'
import {DataType} from '../../onnx/proto.js'
import type {NodeProto, TensorProto, ValueInfoProto} from '../../onnx/proto.js'
import {makeTensor} from '../../onnx/tensor.js'

export type ConstData = Float32Array | Int32Array | BigInt64Array | Uint8Array

/**
 * A tensor during conversion. `shape` is the source model's (logical, channels-last) shape with -1 for
 * unknown dims. `nchw` marks a rank-4 tensor whose ONNX value is stored channels-first: convolution
 * chains stay channels-first and only ops that depend on axis order pay for a Transpose back.
 */
export interface Val {
  name: string
  dtype: number
  shape?: number[]
  nchw?: boolean
  /** Logical values when known at conversion time (constants and what folds from them). */
  value?: ConstData
}

export const TO_NCHW = [0, 3, 1, 2]
export const TO_NHWC = [0, 2, 3, 1]

export function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1)
}

/** Permute a dense row-major array: output dim i is input dim perm[i]. */
export function permuteData<T extends ConstData>(data: T, shape: readonly number[], perm: readonly number[]): T {
  const rank = shape.length
  const outShape = perm.map((p) => shape[p]!)
  const inStrides = new Array<number>(rank).fill(1)
  for (let i = rank - 2; i >= 0; i--) inStrides[i] = inStrides[i + 1]! * shape[i + 1]!
  const out = new (data.constructor as new (n: number) => T)(data.length)
  const idx = new Array<number>(rank).fill(0)
  const strides = perm.map((p) => inStrides[p]!)
  for (let o = 0; o < data.length; o++) {
    let src = 0
    for (let d = 0; d < rank; d++) src += idx[d]! * strides[d]!
    ;(out as any)[o] = (data as any)[src]
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d]! < outShape[d]!) break
      idx[d] = 0
    }
  }
  return out
}

function arrayDtype(a: ConstData): number {
  if (a instanceof Float32Array) return DataType.FLOAT
  if (a instanceof Int32Array) return DataType.INT32
  if (a instanceof BigInt64Array) return DataType.INT64
  return DataType.BOOL
}

/**
 * When a permutation moves only size-1 dims (a 1×1 feature map, a single channel), the data order
 * does not change and a Reshape to the permuted shape does the job; returns that shape (batch as 0,
 * "copy"), or undefined when the dims are not known well enough.
 */
function reshapeForPerm(shape: readonly number[] | undefined, perm: readonly number[]): number[] | undefined {
  if (!shape || shape.slice(1).some((d) => d < 0)) return undefined
  const order = perm.filter((p) => shape[p] !== 1)
  if (!order.every((p, i) => i === 0 || p > order[i - 1]!)) return undefined
  return perm.map((p) => (p === 0 ? 0 : shape[p]!))
}

/** Accumulates ONNX nodes and initializers with layout bookkeeping and stable, unique names. */
export class GraphBuilder {
  readonly nodes: NodeProto[] = []
  readonly initializers: TensorProto[] = []
  readonly inputs: ValueInfoProto[] = []
  readonly outputs: ValueInfoProto[] = []
  /** Nodes marked for an external custom-op domain, by op type. */
  readonly customOps = new Map<string, number>()
  private readonly used = new Set<string>()
  private readonly layoutCache = new Map<string, string>()

  constructor(readonly opset: number) {}

  /** A fresh tensor name based on `hint`. */
  fresh(hint: string): string {
    let name = hint || 't'
    for (let i = 1; this.used.has(name); i++) name = `${hint}_${i}`
    this.used.add(name)
    return name
  }

  /** Claim a name for an interface tensor so no inner tensor takes it. */
  reserve(name: string): void {
    if (this.used.has(name)) throw new KilnError(`two interface tensors are both named '${name}'`, {code: 'E_TFJS_NAMES'})
    this.used.add(name)
  }

  constant(hint: string, data: ConstData, shape: readonly number[]): Val {
    const name = this.fresh(hint)
    this.initializers.push(makeTensor(name, arrayDtype(data), shape, data))
    return {name, dtype: arrayDtype(data), shape: [...shape], value: data}
  }

  i64(hint: string, values: readonly number[]): string {
    return this.constant(hint, BigInt64Array.from(values, (v) => BigInt(v)), [values.length]).name
  }

  f32(hint: string, values: readonly number[], shape: readonly number[] = [values.length]): string {
    return this.constant(hint, Float32Array.from(values), shape).name
  }

  /** Add one node with one output; `out` describes the output tensor. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue | undefined>, out: Omit<Val, 'name'> & {hint: string}, domain?: string): Val {
    const name = this.fresh(out.hint)
    this.nodes.push(makeNode(opType, inputs, [name], attrs, {name, domain}))
    return {name, dtype: out.dtype, shape: out.shape, nchw: out.nchw}
  }

  /** Add one node with several outputs. */
  opMulti(opType: string, inputs: string[], attrs: Record<string, AttrValue | undefined>, outs: (Omit<Val, 'name'> & {hint: string})[], domain?: string): Val[] {
    const names = outs.map((o) => this.fresh(o.hint))
    this.nodes.push(makeNode(opType, inputs, names, attrs, {name: names[0], domain}))
    return outs.map((o, i) => ({name: names[i]!, dtype: o.dtype, shape: o.shape, nchw: o.nchw}))
  }

  /** The ONNX name of `v` in channels-first order (rank 4 only). */
  nchwName(v: Val): string {
    if (v.nchw) return v.name
    if (v.value && v.shape) return this.cached(`${v.name}>nchw`, () => this.constant(`${v.name}_nchw`, permuteData(v.value!, v.shape!, TO_NCHW), TO_NCHW.map((p) => v.shape![p]!)).name)
    return this.cached(`${v.name}>nchw`, () => this.permute(v.name, v.dtype, v.shape, TO_NCHW, `${v.name}_nchw`))
  }

  /** Transpose, or a Reshape when only size-1 dims move. `shape` is the input's shape. */
  private permute(name: string, dtype: number, shape: number[] | undefined, perm: number[], hint: string): string {
    const target = reshapeForPerm(shape, perm)
    if (target) return this.op('Reshape', [name, this.i64(`${hint}_shape`, target)], {}, {hint, dtype}).name
    return this.op('Transpose', [name], {perm}, {hint, dtype}).name
  }

  /** The ONNX name of `v` in the source model's own axis order. */
  logicalName(v: Val): string {
    if (!v.nchw) return v.name
    return this.cached(`${v.name}>nhwc`, () => this.permute(v.name, v.dtype, v.shape && TO_NCHW.map((p) => v.shape![p]!), TO_NHWC, `${v.name}_nhwc`))
  }

  /** `v` in logical order, as a Val. */
  logical(v: Val): Val {
    return v.nchw ? {...v, name: this.logicalName(v), nchw: false} : v
  }

  /** `v` as an int64 tensor (ONNX shape, pads and index inputs need int64). */
  int64Name(v: Val): string {
    if (v.dtype === DataType.INT64) return this.logicalName(v)
    if (v.value && v.shape) return this.cached(`${v.name}>i64`, () => this.constant(`${v.name}_i64`, BigInt64Array.from(v.value as Iterable<number>, (x) => BigInt(Math.trunc(Number(x)))), v.shape!).name)
    return this.cached(`${v.name}>i64`, () => this.op('Cast', [this.logicalName(v)], {to: DataType.INT64}, {hint: `${v.name}_i64`, dtype: DataType.INT64}).name)
  }

  private cached(key: string, make: () => string): string {
    let name = this.layoutCache.get(key)
    if (!name) {
      name = make()
      this.layoutCache.set(key, name)
    }
    return name
  }

  addInput(name: string, dtype: number, shape: readonly (number | string)[] | undefined): void {
    this.inputs.push(makeValueInfo(name, dtype, shape?.map((d) => (typeof d === 'number' && d < 0 ? undefined : d))))
  }

  /**
   * Expose `v` as graph output `name`, in channels-first order when `nchw` and rank 4, with the
   * source dtype `dtype`.
   */
  addOutput(name: string, v: Val, dtype: number, nchw: boolean): void {
    const rank4 = v.shape?.length === 4
    let src = rank4 && nchw ? this.nchwName(v) : this.logicalName(v)
    if (v.dtype !== dtype) src = this.op('Cast', [src], {to: dtype}, {hint: `${name}_cast`, dtype}).name
    this.nodes.push(makeNode('Identity', [src], [name], {}, {name}))
    const shape = v.shape && rank4 && nchw ? TO_NCHW.map((p) => v.shape![p]!) : v.shape
    this.outputs.push(makeValueInfo(name, dtype, shape?.map((d, i) => (d < 0 ? (i === 0 ? 'batch' : undefined) : d))))
  }
}

/** Logical values of a constant Val as numbers. */
export function constNumbers(v: Val, what: string): number[] {
  if (!v.value) throw new KilnError(`${what} must be a constant for ONNX conversion, but it is computed at run time`, {code: 'E_TFJS_DYNAMIC'})
  return Array.from(v.value as ArrayLike<number | bigint>, (x) => Number(x))
}

export const TF_DTYPES: Record<string, number> = {
  DT_FLOAT: DataType.FLOAT,
  DT_INT32: DataType.INT32,
  DT_INT64: DataType.INT64,
  DT_BOOL: DataType.BOOL,
  DT_HALF: DataType.FLOAT16,
  DT_DOUBLE: DataType.DOUBLE,
  DT_UINT8: DataType.UINT8,
  DT_INT8: DataType.INT8,
  float32: DataType.FLOAT,
  int32: DataType.INT32,
  bool: DataType.BOOL,
}
