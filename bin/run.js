#!/usr/bin/env node
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
// `kiln serve` runs for a long time: its garbage-collector settings must be in place before the heap grows.
if (process.argv.slice(2).find((a) => !a.startsWith('-')) === 'serve') {
  const {tuneHeapForServing} = await import('../dist/delivery/serve/heap.js')
  tuneHeapForServing()
}
const {execute} = await import('@oclif/core')
await execute({dir: import.meta.url})
