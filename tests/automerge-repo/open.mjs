// Opens records through the town server's automerge-repo endpoint, as a fresh JavaScript peer
// would, and prints what it cost: bytes of WebSocket payload each way and wall time. Driven by
// `amrepo_bench` (tests/src/bin/amrepo_bench.rs), which does the same through Gridlink's own sync.
//
// Usage: node open.mjs <ws-url-with-ticket> <file with one automerge URL per line>
import fs from "node:fs"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [wsUrl, list] = process.argv.slice(2)
const urls = fs.readFileSync(list, "utf8").split("\n").filter(Boolean)
const adapter = new WebSocketClientAdapter(wsUrl)
let down = 0
let up = 0
const { cbor } = await import("@automerge/automerge-repo")
const send = adapter.send.bind(adapter)
adapter.send = message => {
  up += cbor.encode(message).byteLength
  return send(message)
}
const repo = new Repo({ network: [adapter], peerId: `bench-${process.pid}` })
while (!adapter.socket) await new Promise(r => setTimeout(r, 10))
adapter.socket.addEventListener("message", ev => (down += ev.data.byteLength))
await adapter.whenReady()
const start = performance.now()
const handles = await Promise.all(urls.map(u => repo.find(u)))
const ms = performance.now() - start
const titles = handles.filter(h => String(h.doc().title).length > 0).length
console.log("@@" + JSON.stringify({ records: titles, bytes_down: down, bytes_up: up, ms }))
try {
  adapter.disconnect()
  await repo.shutdown()
} catch {}
process.exit(0)
