import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    disableConsoleIntercept: true,
    // Real-model tests load onnxruntime sessions; two cores are the budget.
    maxWorkers: 2,
  },
})
