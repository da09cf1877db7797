import {beforeAll, describe, expect, it} from 'vitest'
import {readBatches} from '../../src/data/dataset.js'
import {ensureTrainedModels, fixture} from '../helpers/fixtures.js'

describe('readBatches stopped early', () => {
  beforeAll(() => {
    ensureTrainedModels()
  })

  // The reader prefetches the next batch; a caller that stops after the first one must not leave that
  // read running against a closed file (it used to fail later with EBADF).
  for (const [label, path, format] of [
    ['IDX (gzip, streamed)', fixture('data/fashion-mnist/t10k-images-idx3-ubyte.gz'), 'idx'],
    ['NPY (random access)', fixture('data/lfw_subset.npy'), 'npy'],
    ['NPZ (random access, large rows)', fixture('trained/fashion_test.npz'), 'npz'],
  ] as const) {
    it(`closes cleanly after a break: ${label}`, async () => {
      let seen = 0
      for await (const batch of readBatches({name: 'd', path, format}, {batchSize: 64})) {
        seen += batch.size
        break
      }
      expect(seen).toBe(64)
      // Give a stray prefetch the chance to fail before the test ends.
      await new Promise((r) => setTimeout(r, 200))
      let again = 0
      for await (const batch of readBatches({name: 'd', path, format, limit: 20}, {batchSize: 8})) again += batch.size
      expect(again).toBe(20)
    })
  }
})
