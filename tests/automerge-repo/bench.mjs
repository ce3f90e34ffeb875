// The automerge-repo side of the side-by-side sync benchmark (issue 7). `sync_bench` (Rust)
// writes Gridlink's own records as Automerge documents into a work directory, runs this script
// and prints both systems' figures next to each other. The workloads therefore carry the very
// same Automerge changes; only the sync protocol differs.
//
// Usage: node bench.mjs <work-dir>
//   <work-dir>/manifest.json  {"a": 2000, "devices": 100}
//   <work-dir>/seed/*.bin     the town's records, in order (the first `a` form workload (a))
//   <work-dir>/day/*.bin      a grid member's day: new records made offline (workload (c))
//   <work-dir>/morning/<device>/*.bin   each device's morning offline (workload (d))
//
// Measures bytes on the wire through a counting TCP proxy (the same way sync_bench measures
// Gridlink), the server's CPU time and memory from /proc. Prints one line per workload,
// "@@" followed by JSON.
import fs from "node:fs"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const work = process.argv[2]
if (!work) {
  console.error("usage: node bench.mjs <work-dir>")
  process.exit(2)
}
const here = path.dirname(fileURLToPath(import.meta.url))
const manifest = JSON.parse(fs.readFileSync(path.join(work, "manifest.json"), "utf8"))
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gridlink-amrepo-"))
const files = dir =>
  fs
    .readdirSync(dir)
    .sort()
    .map(f => path.join(dir, f))
const read = f => new Uint8Array(fs.readFileSync(f))

// --- the server, as a child process ------------------------------------------------------
const server = spawn(process.execPath, [path.join(here, "server.mjs"), path.join(tmp, "server")], {
  stdio: ["ignore", "pipe", "inherit"],
})
process.on("exit", () => server.kill())
const port = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: server.stdout })
  lines.once("line", l => {
    const [word, p] = l.split(" ")
    word === "ready" ? resolve(Number(p)) : reject(new Error(`server said: ${l}`))
  })
  server.once("exit", code => reject(new Error(`server exited with ${code}`)))
})
const clockTicks = 100
function serverCpu() {
  const stat = fs.readFileSync(`/proc/${server.pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / clockTicks
}
function serverMemoryMiB() {
  const status = fs.readFileSync(`/proc/${server.pid}/status`, "utf8")
  const kib = key => Number(status.match(new RegExp(`${key}:\\s+(\\d+)`))[1])
  return { rss: kib("VmRSS") / 1024, peak: kib("VmHWM") / 1024 }
}

// --- a counting proxy: bytes each way ------------------------------------------------------
const wire = { up: 0, down: 0, last: 0 }
const proxy = net.createServer(client => {
  const upstream = net.connect(port, "127.0.0.1")
  client.on("data", b => {
    wire.up += b.length
    wire.last = performance.now()
    upstream.write(b)
  })
  upstream.on("data", b => {
    wire.down += b.length
    wire.last = performance.now()
    client.write(b)
  })
  const end = () => {
    client.destroy()
    upstream.destroy()
  }
  for (const s of [client, upstream]) {
    s.on("close", end)
    s.on("error", end)
  }
})
await new Promise(r => proxy.listen(0, "127.0.0.1", r))
const proxyUrl = `ws://127.0.0.1:${proxy.address().port}`
const directUrl = `ws://127.0.0.1:${port}`

// --- helpers -------------------------------------------------------------------------------
const sameHeads = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join()

/** Resolves once the server has told `repo` heads equal to ours: the document is in sync. */
function inSync(repo, handle) {
  const done = () => {
    // The one peer is the server; its storage id comes with its peer metadata.
    const server = Object.values(repo.peerMetadataByPeerId).find(m => m.storageId)
    const theirs = server && handle.getSyncInfo(server.storageId)?.lastHeads
    return theirs !== undefined && sameHeads(theirs, handle.heads())
  }
  if (done()) return Promise.resolve()
  return new Promise(resolve => {
    const check = () => {
      if (done()) {
        handle.off("remote-heads", check)
        handle.off("heads-changed", check)
        resolve()
      }
    }
    handle.on("remote-heads", check)
    handle.on("heads-changed", check)
  })
}

/** Messages each document received from the server during the measured workload. */
const answers = new Map()

function device(dir, url) {
  const repo = new Repo({
    network: url ? [new WebSocketClientAdapter(url)] : [],
    storage: new NodeFSStorageAdapter(dir),
  })
  repo.networkSubsystem.on("message", m => {
    if (m.documentId) answers.set(m.documentId, (answers.get(m.documentId) ?? 0) + 1)
  })
  return repo
}

/** Resolves once the repo is connected to the server. Asking for documents before that (while
 * the repo is still busy loading its storage) finds no peer and marks them unavailable. */
function connected(repo) {
  if (repo.peers.length > 0) return Promise.resolve()
  return new Promise(resolve => repo.networkSubsystem.once("peer", () => resolve()))
}

async function quiet(ms) {
  for (;;) {
    await new Promise(r => setTimeout(r, ms))
    if (performance.now() - wire.last >= ms) return
  }
}

/** Runs one measured workload; `fn` returns per-workload extras and must resolve when done. */
async function measure(name, fn) {
  console.error(`automerge-repo: workload (${name})`)
  await quiet(200)
  Object.assign(wire, { up: 0, down: 0 })
  answers.clear()
  const cpu0 = serverCpu()
  const t0 = performance.now()
  const extra = await fn(t0)
  const wall = (performance.now() - t0) / 1000
  await quiet(500) // trailing acknowledgements still count as bytes
  const out = {
    workload: name,
    wall_s: wall,
    bytes_up: wire.up,
    bytes_down: wire.down,
    // Round trips on the critical path: the WebSocket upgrade, join→peer, then the longest
    // document exchange (documents sync in parallel, each answer needs the previous message).
    round_trips: 2 + Math.max(0, ...answers.values()),
    server_cpu_s: serverCpu() - cpu0,
    ...extra,
  }
  console.log("@@" + JSON.stringify(out))
  return out
}

/** Pushes documents to the server directly (not measured); returns their urls in order. */
async function seed(paths) {
  const repo = device(path.join(tmp, `seeder-${paths.length}`), directUrl)
  const handles = paths.map(p => repo.import(read(p)))
  await Promise.all(handles.map(h => inSync(repo, h)))
  await repo.shutdown()
  return handles.map(h => h.url)
}

// --- the workloads -------------------------------------------------------------------------
const seedFiles = files(path.join(work, "seed"))
const urlsA = await seed(seedFiles.slice(0, manifest.a))

// (a) a fresh device bootstraps the first records; it is told their ids.
const phoneDir = path.join(tmp, "phone")
let phone
await measure("a", async () => {
  phone = device(phoneDir, proxyUrl)
  await connected(phone)
  const handles = await Promise.all(urlsA.map(u => phone.find(u)))
  await Promise.all(handles.map(h => inSync(phone, h)))
  return { docs: handles.length }
})
await phone.shutdown()

// (b) the town grows; the device catches up, restarts, and syncs with nothing new.
const urlsAll = urlsA.concat(await seed(seedFiles.slice(manifest.a)))
phone = device(phoneDir, proxyUrl)
await connected(phone)
await Promise.all((await Promise.all(urlsAll.map(u => phone.find(u)))).map(h => inSync(phone, h)))
await phone.shutdown()
await measure("b", async () => {
  phone = device(phoneDir, proxyUrl)
  await connected(phone)
  const handles = await Promise.all(urlsAll.map(u => phone.find(u)))
  await Promise.all(handles.map(h => inSync(phone, h)))
  return { docs: handles.length }
})
await phone.shutdown()

// (c) a day's work made offline, then one connection.
const day = device(path.join(tmp, "day"))
const dayHandles = files(path.join(work, "day")).map(f => day.import(read(f)))
await day.flush()
await measure("c", async () => {
  day.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(proxyUrl))
  await Promise.all(dayHandles.map(h => inSync(day, h)))
  return { docs: dayHandles.length }
})
await day.shutdown()

// (d) many devices after a morning offline, all connecting at once.
const morningDir = path.join(work, "morning")
const fleet = fs
  .readdirSync(morningDir)
  .sort()
  .map(d => {
    const repo = device(path.join(tmp, `morning-${d}`))
    return { repo, handles: files(path.join(morningDir, d)).map(f => repo.import(read(f))) }
  })
await Promise.all(fleet.map(f => f.repo.flush()))
await measure("d", async t0 => {
  for (const f of fleet) f.repo.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(proxyUrl))
  const lat = await Promise.all(
    fleet.map(async f => {
      await Promise.all(f.handles.map(h => inSync(f.repo, h)))
      return (performance.now() - t0) / 1000
    }),
  )
  lat.sort((x, y) => x - y)
  const pct = p => lat[Math.round((lat.length - 1) * p)]
  return { devices: fleet.length, p50_s: pct(0.5), p99_s: pct(0.99) }
})
await Promise.all(fleet.map(f => f.repo.shutdown()))

console.log("@@" + JSON.stringify({ workload: "memory", ...serverMemoryMiB() }))
server.kill()
proxy.close()
fs.rmSync(tmp, { recursive: true, force: true })
process.exit(0)
