/** Options for converting a TF.js model (layers or graph `model.json`) to ONNX. */
export interface TfjsConvertOptions {
  /** Interface layout: keep the model's NHWC (default) or expose NCHW. */
  layout?: 'nhwc' | 'nchw'
  /** ONNX opset to target (default 17). */
  opset?: number
  /** Built-in verification against TF.js itself (default on). */
  verify?: boolean | {tolerance?: number; samples?: number; dataset?: string}
  /** Mark unsupported ops for this custom-op domain instead of failing. */
  customOpDomain?: string
  signal?: AbortSignal
  log?: (message: string) => void
}

export interface TfjsConvertResult {
  metrics: Record<string, unknown>
}

/** Convert `modelJson` to an ONNX file at `outFile`. */
export async function convertTfjs(modelJson: string, outFile: string, options: TfjsConvertOptions = {}): Promise<TfjsConvertResult> {
  void outFile
  void options
  throw new Error(`TF.js conversion of ${modelJson} is not available in this build`)
}
