// A JavaScript peer using automerge-repo 2.5 itself against the town server's automerge-repo
// endpoint. Started by tests/tests/automerge_repo.rs, which runs the server and the phones; phone
// steps are asked for with `@@{json}` lines on stdout, answered on stdin.
import assert from "node:assert/strict"
import readline from "node:readline"
import WebSocket from "ws"
import * as A from "@automerge/automerge"
import { Repo, cbor } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const replies = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
async function step(cmd, arg = {}) {
  process.stdout.write("@@" + JSON.stringify({ cmd, arg }) + "\n")
  const { value } = await replies.next()
  return JSON.parse(value)
}
const ok = what => console.log("ok " + what)
const str = v => (v === undefined || v === null ? v : String(v))
const S = s => new A.ImmutableString(s)

async function within(ms, what, f) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 50))
  }
}

// Every message the server sends this peer, decoded, for what the library only logs.
function tap(adapter) {
  const seen = []
  const attach = () => adapter.socket?.addEventListener("message", ev => seen.push(cbor.decode(new Uint8Array(ev.data))))
  attach()
  return { seen, attach }
}

const setup = await step("setup")
const { url: wsUrl } = await step("ticket")
const adapter = new WebSocketClientAdapter(wsUrl)
const repo = new Repo({ network: [adapter], peerId: "js-station", sharePolicy: async () => true })
await within(5000, "the socket to open", () => adapter.socket)
const messages = tap(adapter)
let closed = null
adapter.socket.addEventListener("close", ev => (closed = { code: ev.code, reason: ev.reason }))

try {
  // --- Find a record by its automerge URL and read it. ---
  const handle = await repo.find(setup.record_url)
  const doc = handle.doc()
  assert.equal(str(doc.title), setup.title)
  assert.equal(str(doc.id), setup.record_id)
  assert.equal(str(doc.case_no), setup.case_no)
  ok("a record is found by its automerge URL and its fields read")

  // --- A legal change: the station accepts the report (a timeline entry its role may write). ---
  const entry = crypto.randomUUID()
  handle.change(d => {
    d.timeline[entry] = {
      at_ms: Date.now(),
      at_c: 0,
      actor: S("village"),
      actor_name: S("测试village"),
      role: S("station_staff"),
      unit: S(setup.village),
      action: { type: S("accept") },
      note: "网页端受理",
    }
  })
  const seenByPhone = await within(10000, "the phone to see the web entry", async () => {
    const r = await step("phone_entries")
    return r.notes.includes("网页端受理") && r
  })
  assert.equal(seenByPhone.status, "accepted")
  ok("a legal change made in JavaScript reaches a phone after its next sync")

  // --- A phone's change reaches the peer live. ---
  const before = Date.now()
  const dispatched = step("phone_dispatch")
  await within(10000, "the dispatch to arrive", () =>
    Object.values(handle.doc().timeline).some(e => str(e.action.type) === "dispatch"),
  )
  await dispatched
  console.log(`live: the phone's dispatch arrived ${Date.now() - before} ms after the phone's sync began`)
  ok("a phone's change arrives at the peer live")

  // --- A record that comes into the peer's scope is announced. ---
  const fresh = await step("phone_new_record")
  const announced = await within(10000, "the new record to be announced", () => {
    const h = repo.handles[fresh.document_id]
    return h && h.isReady() && h
  })
  assert.equal(str(announced.doc().title), fresh.title)
  ok("a record new in the peer's scope is announced to it")

  // --- An illegal change: refused, the peer is told, no phone sees it. ---
  handle.change(d => {
    d.case_no = S("GT-2099-999999")
  })
  const error = await within(10000, "the server's refusal", () =>
    messages.seen.find(m => m.type === "error" && /案卷编号只能由服务器分配/.test(m.message)),
  )
  console.log(`refusal: ${error.message}`)
  // The refusal ends with `doc-unavailable` for the record; a copy deleted and asked for before
  // that arrives would be marked unavailable by it.
  const refusedId = setup.record_url.replace("automerge:", "")
  await within(10000, "the refused record to be answered unavailable", () =>
    messages.seen.find(m => m.type === "doc-unavailable" && m.documentId === refusedId),
  )
  const phoneView = await step("phone_case_no")
  assert.equal(phoneView.case_no, setup.case_no, "the forged case number never reaches a phone")
  // Recovery: the app deletes its copy and finds the record again; it gets the server's state,
  // and the record's later work arrives live again.
  repo.delete(setup.record_url)
  const again = await repo.find(setup.record_url)
  assert.equal(str(again.doc().case_no), setup.case_no)
  await step("phone_sign")
  await within(10000, "the grid member's signing to arrive", () =>
    Object.values(again.doc().timeline).some(e => str(e.action.type) === "sign"),
  )
  ok("an illegal change is refused, the peer is told, and no phone sees it; deleting and finding the record again recovers")

  // --- A record outside the peer's scope is unavailable, like one that does not exist. ---
  const outside = await repo.find(setup.other_url).then(
    () => "found",
    e => String(e),
  )
  assert.match(outside, /unavailable/)
  const none = await repo.find(setup.missing_url).then(
    () => "found",
    e => String(e),
  )
  assert.match(none, /unavailable/)
  ok("a record outside scope answers as one that does not exist")

  // --- A record that leaves a peer's scope is dropped: the department returns it. ---
  const { url: deptUrl } = await step("dept_ticket")
  const deptAdapter = new WebSocketClientAdapter(deptUrl)
  const deptRepo = new Repo({ network: [deptAdapter], peerId: "js-dept", sharePolicy: async () => true })
  await within(5000, "the department's socket to open", () => deptAdapter.socket)
  const deptMessages = tap(deptAdapter)
  await within(5000, "the server to greet the department's peer", () => deptRepo.peers.length > 0)
  const toDept = await step("center_dispatch_to_dept")
  const deptHandle = await within(10000, "the dispatched record to be announced to the department", () => {
    const h = deptRepo.handles[toDept.document_id]
    return h && h.isReady() && h
  })
  assert.equal(str(deptHandle.doc().title), toDept.title)
  await step("dept_return")
  await within(10000, "the returned record to be dropped", () =>
    deptMessages.seen.find(m => m.type === "doc-unavailable" && m.documentId === toDept.document_id),
  )
  // The center sends it on to another department; none of that reaches the one that gave it back.
  await step("center_dispatch_to_dept_b")
  await new Promise(r => setTimeout(r, 1500))
  const deptTypes = Object.values(deptHandle.doc().timeline).map(e => str(e.action.type))
  assert.equal(deptTypes.filter(t => t === "dispatch").length, 1, `nothing after the return: ${deptTypes}`)
  assert.ok(
    !deptMessages.seen.some((m, i) => i > deptMessages.seen.findIndex(x => x.type === "doc-unavailable") && m.documentId === toDept.document_id),
    "no message about the record after it left the scope",
  )
  try {
    await deptRepo.shutdown()
  } catch {}
  ok("a record that leaves a peer's scope is answered unavailable and no longer synced")

  // --- Bad input on a socket closes that connection with a reason. ---
  async function raw(send) {
    const { url } = await step("ticket")
    const ws = new WebSocket(url)
    await new Promise((res, rej) => {
      ws.on("open", res)
      ws.on("error", rej)
    })
    const done = new Promise(res => ws.on("close", (code, reason) => res({ code, reason: reason.toString() })))
    ws.on("error", () => {})
    send(ws)
    return done
  }
  const join = cbor.encode({ type: "join", senderId: "raw", peerMetadata: {}, supportedProtocolVersions: ["1"] })
  const text = await raw(ws => ws.send("hello"))
  assert.deepEqual([text.code, text.reason], [1003, "只接受 CBOR 二进制消息"])
  const garbage = await raw(ws => ws.send(Buffer.from([0xff, 0x00, 0x13, 0x37])))
  assert.equal(garbage.code, 1007)
  const unknown = await raw(ws => {
    ws.send(join)
    ws.send(cbor.encode({ type: "teleport", senderId: "raw" }))
  })
  assert.deepEqual([unknown.code, unknown.reason], [1008, "未知的消息类型"])
  const early = await raw(ws => ws.send(cbor.encode({ type: "request", senderId: "raw", documentId: "x", data: new Uint8Array([1]) })))
  assert.deepEqual([early.code, early.reason], [1008, "请先发送 join"])
  const huge = await raw(ws => ws.send(Buffer.alloc(9 << 20)))
  assert.deepEqual([huge.code, huge.reason], [1009, "消息过大"])
  const flood = await raw(ws => {
    ws.send(join)
    const req = cbor.encode({ type: "ephemeral", senderId: "raw", targetId: "s", documentId: "x", data: new Uint8Array([1]) })
    for (let i = 0; i < 10050; i++) ws.send(req)
  })
  assert.deepEqual([flood.code, flood.reason], [1008, "消息过于频繁"], JSON.stringify(flood))
  const forged = await new Promise(res => {
    const ws = new WebSocket(wsUrl.replace(/ticket=.*/, "ticket=made-up"))
    ws.on("unexpected-response", (_, resp) => res(resp.statusCode))
    ws.on("error", () => {})
  })
  assert.equal(forged, 401, "a made-up ticket opens nothing")
  // A console page connects with its session cookie, from the server's own origin only.
  const session = await step("session")
  const withCookie = origin =>
    new Promise(res => {
      const ws = new WebSocket(session.ws, { headers: { Cookie: `gl_session=${session.token}`, Origin: origin } })
      ws.on("open", () => {
        ws.close()
        res("open")
      })
      ws.on("unexpected-response", (_, resp) => res(resp.statusCode))
      ws.on("error", () => {})
    })
  assert.equal(await withCookie(session.origin), "open")
  assert.equal(await withCookie("http://evil.example"), 401, "another site's page cannot ride on the cookie")
  ok("bad input closes the connection with a reason; a made-up ticket or another site's page opens nothing")

  // --- A revoked device is disconnected. ---
  assert.equal(closed, null)
  await step("revoke")
  await within(10000, "the connection to close", () => closed)
  assert.equal(closed.code, 1008)
  assert.ok(messages.seen.some(m => m.type === "error" && /停用/.test(m.message)))
  ok("a revoked device is disconnected")
} catch (e) {
  console.error(e)
  process.exitCode = 1
} finally {
  // The adapter's own bookkeeping asserts after a server-side close; nothing to tidy then.
  try {
    adapter.disconnect()
    await repo.shutdown()
  } catch {}
  process.stdin.destroy()
  setTimeout(() => process.exit(), 200)
}
