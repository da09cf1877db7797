import v8 from 'node:v8'

const SETTINGS = [
  ['--semi-space-growth-factor', '1'],
  ['--heap-growing-percent', '300'],
] as const

/**
 * V8 garbage-collector settings for a process whose job is serving. `kiln serve` applies them as the
 * process starts (bin/run.js), before its heap has grown: set later, the new space keeps the size it
 * has reached by then. A program that embeds `serve()` keeps its own. A setting the process was
 * started with (in its arguments or NODE_OPTIONS) is left as given.
 *
 * Why: each request body arrives in fresh buffers that Node's HTTP parser allocates (196 KB for a
 * BlazeFace image), and V8 counts them against the old generation's allocation limit until a
 * scavenge frees them. With the server's small heap that limit sat about 16 MB above the live
 * size, a grown new space took half of it, and a full collection came every 40–50 requests,
 * stopping the HTTP thread 5–15 ms each time. Keeping the new space at its first size makes
 * scavenges, which free those buffers, frequent and cheap; a limit four times the live heap (a few
 * tens of MB here) leaves room for the rest. Full collections fell from about 22 to 2–3 per 1,000
 * BlazeFace requests, and the server's CPU per request by about a sixth.
 */
export function tuneHeapForServing(): void {
  const given = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`.replaceAll('_', '-')
  const settings = SETTINGS.filter(([flag]) => !given.includes(flag)).map(([flag, value]) => `${flag}=${value}`)
  if (settings.length === 0) return
  const apply = (): void => {
    for (const setting of settings) v8.setFlagsFromString(setting)
  }
  apply()
  // Starting a worker thread (an inference worker, or the thread of a module loader's hooks) sets
  // V8's flags back to the process's command line: apply them again once each one is up.
  process.on('worker', (worker) => worker.once('online', apply))
}
