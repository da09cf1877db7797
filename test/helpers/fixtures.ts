import path from 'node:path'
// @ts-expect-error plain JS script without types
import {FIXTURES_DIR, fetchFixtures} from '../../scripts/fetch-fixtures.js'

/** Absolute path of a fixture file (fetched by `npm run fixtures`, which `npm test` runs first). */
export function fixture(rel: string): string {
  return path.join(FIXTURES_DIR as string, rel)
}

/** Make sure fixtures are present (cheap when they are). */
export function ensureFixtures(): void {
  ;(fetchFixtures as (o: {quiet: boolean}) => void)({quiet: true})
}

export const MODELS = {
  blazeface: fixture('onnx/blazeface_front_128.onnx'),
  sileroV5: fixture('onnx/silero_vad_v5.onnx'),
  sileroLegacy: fixture('onnx/silero_vad_legacy.onnx'),
  ocrDet: fixture('onnx/ppocr_det_v4.onnx'),
  ocrRec: fixture('onnx/ppocr_rec_v4.onnx'),
  ocrCls: fixture('onnx/ppocr_cls_v2.onnx'),
}
