import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../errors.js'
import type {Preprocess} from './preprocess.js'
import {size2} from './preprocess.js'
import type {Field, Source} from './sources.js'

const IMAGE_EXT = /\.(png|jpe?g|webp|gif|tiff?|avif|bmp)$/i

export interface ImageGeometry {
  height: number
  width: number
  channels: number
}

/**
 * An image dataset: either one sub-folder per class (classes numbered in sorted name order), or a
 * flat folder with a labels file (CSV/TSV lines `file,label`; a numeric label is used as is, a
 * name is numbered in sorted order). Images are decoded per batch with sharp, to HWC uint8.
 */
export async function imageSource(dir: string, geometry: ImageGeometry, pre: Preprocess, labelsFile?: string): Promise<Source & {classes: string[]; files: string[]}> {
  let entries: {file: string; label: string}[] = []
  const stat = await fsp.stat(dir).catch(() => undefined)
  if (!stat?.isDirectory()) throw new KilnError(`image dataset ${dir} is not a directory`, {code: 'E_DATA', tryMessage: 'Point `path` at a folder of class sub-folders, or set `format`.'})
  if (labelsFile) {
    const text = await fsp.readFile(labelsFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new KilnError(`cannot read labels file ${labelsFile}: ${e.code}`, {code: 'E_DATA'})
    })
    for (const [i, line] of text.split(/\r?\n/).entries()) {
      if (!line.trim()) continue
      const [file, label] = line.split(/[,\t]/).map((s) => s.trim())
      if (!file || label === undefined || label === '') throw new KilnError(`${labelsFile}:${i + 1}: expected 'file,label'`, {code: 'E_DATA'})
      if (i === 0 && !IMAGE_EXT.test(file)) continue // a header line
      entries.push({file: path.resolve(dir, file), label})
    }
  } else {
    const classes = (await fsp.readdir(dir, {withFileTypes: true})).filter((d) => d.isDirectory()).map((d) => d.name).sort()
    if (classes.length === 0) throw new KilnError(`image dataset ${dir} has no class sub-folders`, {code: 'E_DATA', tryMessage: 'Use one folder per class, or give a labels file (`labels: labels.csv`).'})
    for (const c of classes) {
      const files = (await fsp.readdir(path.join(dir, c))).filter((f) => IMAGE_EXT.test(f)).sort()
      entries.push(...files.map((f) => ({file: path.join(dir, c, f), label: c})))
    }
  }
  if (entries.length === 0) throw new KilnError(`image dataset ${dir} has no images`, {code: 'E_DATA'})
  const numeric = entries.every((e) => /^-?\d+$/.test(e.label))
  const classes = numeric ? [] : [...new Set(entries.map((e) => e.label))].sort()
  const labelOf = (l: string) => (numeric ? Number(l) : classes.indexOf(l))
  entries = entries.slice()
  const [rh, rw] = pre.resize ? size2(pre.resize) : [geometry.height, geometry.width]
  const crop = pre.crop ? size2(pre.crop) : undefined
  const [oh, ow] = crop ?? [rh, rw]
  const c = geometry.channels
  const fields: Field[] = [
    {name: 'image', dtype: '|u1', shape: [oh, ow, c]},
    {name: 'label', dtype: '<f8', shape: []},
  ]
  const {default: sharp} = await import('sharp')
  return {
    fields,
    classes,
    files: entries.map((e) => e.file),
    length: entries.length,
    async read(indices, wanted) {
      const values: Record<string, Float64Array | Uint8Array> = {}
      if (wanted.includes('image')) {
        const out = new Uint8Array(indices.length * oh * ow * c)
        await Promise.all(
          indices.map(async (k, j) => {
            const file = entries[k]!.file
            try {
              // sharp applies extract after resize when it is called after it.
              let img = sharp(file).resize(rw, rh, {fit: 'fill'})
              if (crop) img = img.extract({left: Math.floor((rw - ow) / 2), top: Math.floor((rh - oh) / 2), width: ow, height: oh})
              img = c === 1 ? img.removeAlpha().grayscale() : img.removeAlpha().toColourspace('srgb')
              const {data, info} = await img.raw().toBuffer({resolveWithObject: true})
              if (info.channels !== c || info.width !== ow || info.height !== oh) throw new Error(`decoded to ${info.height}×${info.width}×${info.channels}`)
              out.set(data, j * oh * ow * c)
            } catch (error) {
              throw new KilnError(`cannot read image ${file}: ${(error as Error).message}`, {code: 'E_DATA_IMAGE', tryMessage: 'Remove or replace the file; kiln reads PNG, JPEG, WebP, GIF, TIFF and AVIF.'})
            }
          }),
        )
        values.image = out
      }
      if (wanted.includes('label')) values.label = Float64Array.from(indices, (k) => labelOf(entries[k]!.label))
      return {rows: indices.length, values}
    },
    close: async () => {},
  }
}
