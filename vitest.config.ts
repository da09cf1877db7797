import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    disableConsoleIntercept: true,
    // The AWS SDK warns on every client about Node 20 support; bin/run.js silences it for the CLI too.
    env: {AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true'},
    // Real-model tests load onnxruntime sessions; two cores are the budget.
    maxWorkers: 2,
  },
})
