// The reference automerge-repo sync server for the side-by-side benchmark: a Repo with file
// storage behind a WebSocket server, set up the way automerge-repo's own sync server is (it
// announces nothing and answers what clients ask for by document id).
//
// Usage: node server.mjs <storage-dir>
// Prints one line "ready <port>" once it accepts connections.
import http from "node:http"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const dir = process.argv[2]
if (!dir) {
  console.error("usage: node server.mjs <storage-dir>")
  process.exit(2)
}

const server = http.createServer((_, res) => res.writeHead(404).end())
const wss = new WebSocketServer({ server })
const repo = new Repo({
  // Its keep-alive (5 s by default) drops a client that is busy loading thousands of documents
  // and answers no ping; a phone-sized pause should not cost a reconnect here.
  network: [new WebSocketServerAdapter(wss, 120_000)],
  storage: new NodeFSStorageAdapter(dir),
  sharePolicy: async () => false,
})

// The adapter handles connections only once the repo has loaded its storage id; listening
// before that leaves early clients waiting.
while (wss.listenerCount("connection") === 0) {
  await new Promise(r => setTimeout(r, 10))
}
server.listen(0, "127.0.0.1", () => {
  console.log(`ready ${server.address().port}`)
})
