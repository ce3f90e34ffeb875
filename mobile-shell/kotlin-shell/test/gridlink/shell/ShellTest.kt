package gridlink.shell

import kotlinx.coroutines.runBlocking
import uniffi.gridlink_ffi.ActionInput
import uniffi.gridlink_ffi.GridlinkClient
import uniffi.gridlink_ffi.GridlinkException
import java.io.File
import java.nio.file.Files

/**
 * The kotlin-shell on the JVM against the real native library and a real server:
 * `cargo xtask test` compiles and runs it. Prints "N passed, M failed".
 */
private var passed = 0
private var failed = 0

private fun check(name: String, ok: Boolean, detail: () -> String = { "" }) {
    if (ok) passed++ else {
        failed++
        System.err.println("FAILED: $name ${detail()}")
    }
}

private const val PASSWORD = "test-password-1"

private fun startServer(): Pair<Process, String> {
    val bin = System.getenv("GRIDLINK_SERVER_BIN") ?: "target/debug/gridlink-server"
    val dir = Files.createTempDirectory("gridlink-kt").toFile()
    val db = File(dir, "town.db").path
    File(dir, "units.csv").writeText(
        "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n" +
            "532331101201-01,一组,组,532331101201,\n532331101201-01-01,一组1号网格,网格,532331101201-01,\n",
    )
    File(dir, "people.csv").writeText(
        "id,name,role,unit,password\nwangfang,王芳,网格员,532331101201-01-01,$PASSWORD\n" +
            "lijun,李军,便民服务站代办员,532331101201,$PASSWORD\nzhaomin,赵敏,综治中心工作人员,532331101,$PASSWORD\n",
    )
    for (what in listOf("units", "people")) {
        val p = ProcessBuilder(bin, "import", "--db", db, what, File(dir, "$what.csv").path).redirectErrorStream(true).start()
        check("import $what", p.waitFor() == 0) { p.inputStream.bufferedReader().readText() }
    }
    val server = ProcessBuilder(bin, "serve", "--listen", "127.0.0.1:0", "--db", db).redirectError(ProcessBuilder.Redirect.DISCARD).start()
    val base = server.inputStream.bufferedReader().readLine().trim().split(" ").last()
    return server to base
}

private fun schedulerPolicy() {
    val s = SyncScheduler(periodMs = 15 * 60_000L, firstBackoffMs = 30_000L)
    check("foreground syncs", s.onForeground(0) is SyncScheduler.Decision.SyncNow)
    s.onResult(true, 0)
    check("periodic waits", s.onTick(60_000) == SyncScheduler.Decision.Wait(15 * 60_000L))
    check("periodic due", s.onTick(15 * 60_000L) is SyncScheduler.Decision.SyncNow)
    s.onResult(false, 1_000_000)
    s.onResult(false, 1_000_000)
    check("backoff doubles", s.nextDueMs() == 1_060_000L) { "${s.nextDueMs()}" }
    check("offline waits", s.onConnectivity(false, 1_000_000) == SyncScheduler.Decision.Wait(Long.MAX_VALUE))
    check("back online syncs now", s.onConnectivity(true, 1_000_001) is SyncScheduler.Decision.SyncNow)
    s.onResult(true, 2_000_000)
    s.onBattery(true)
    val d = s.onTick(2_000_000 + 15 * 60_000L)
    check("low battery defers periodic", d is SyncScheduler.Decision.Wait) { "$d" }
    check("user request still syncs", s.onUserRequest() is SyncScheduler.Decision.SyncNow)
}

fun main() {
    schedulerPolicy()
    val (server, base) = startServer()
    try {
        runBlocking {
            val tmp = Files.createTempDirectory("phones").toFile()
            val phone = GridlinkClient.open(File(tmp, "grid").path, base)
            val me = phone.login("wangfang", PASSWORD, "王芳的手机")
            check("login", me.roleLabel == "网格员") { me.toString() }
            val sync = SyncStatusViewModel(phone)
            val scheduler = SyncScheduler()

            // Offline report with a photo.
            val report = ReportViewModel(phone)
            check("catalog", report.categories.any { it.code == "0501" && it.majorName == "环境卫生" })
            report.category = "0501"
            check("empty title refused", report.submit() == null && report.error == "请填写标题")
            report.title = "村口垃圾堆积"
            report.description = "村口桥头有大量生活垃圾"
            report.latitude = 25.13
            report.longitude = 102.05
            report.photoPaths += File("bindings/tests/fixtures/street.jpg").absolutePath
            val id = report.submit()
            check("report filed offline", id != null) { report.error ?: "" }
            id!!
            check("status line shows pending", sync.line() == "尚未同步" || sync.line().startsWith("待上传")) { sync.line() }
            phone.syncStatus().let { check("pending counts", it.pending == 2L && it.pendingPhotos == 1L) { it.toString() } }

            val r = sync.syncIfDue(scheduler, scheduler.onForeground(System.currentTimeMillis()), System.currentTimeMillis())
            check("synced", r != null && r.pushed == 2u && r.photosUploaded == 1u) { r.toString() }
            check("status line after sync", sync.line().startsWith("已同步")) { sync.line() }
            val rec = RecordViewModel(phone, id)
            check("case number", rec.detail.caseNumber?.startsWith("GT-") == true) { rec.detail.toString() }
            check("read-only after routing: no buttons", rec.buttons.isEmpty()) { rec.buttons.toString() }
            check("close refused", !rec.perform(ActionInput(kind = "close"), "") && rec.error!!.contains("无权")) { rec.error ?: "" }

            // The center accepts it on its own device.
            val center = GridlinkClient.open(File(tmp, "center").path, base)
            center.login("zhaomin", PASSWORD, "综治中心")
            center.syncNow()
            val cv = RecordViewModel(center, id)
            check("center may accept", cv.buttons.contains("受理")) { cv.buttons.toString() }
            check("accept", cv.perform(ActionInput(kind = "accept"), ""))
            center.backgroundSync()

            // Seen on the grid member's phone after the next sync.
            phone.syncNow()
            rec.reload()
            check("center's action seen", rec.detail.statusLabel == "已受理") { rec.detail.statusLabel }
            check("timeline", rec.timelineLines().last().contains("赵敏(综治中心工作人员) 受理")) { rec.timelineLines().joinToString("\n") }
            val tasks = TasksViewModel(center)
            tasks.refresh()
            check("center's tasks", tasks.tasks.any { it.id == id })

            // A dispatch picker, a search screen and a photo view from the bindings alone.
            val targets = center.actionTargets(id, "dispatch")
            check("dispatch picker has named units", targets.isNotEmpty() && targets.all { it.name.isNotEmpty() }) { targets.toString() }
            check("not to the center itself", targets.none { it.code == "532331101" }) { targets.toString() }
            val found = phone.searchPage("垃圾", 10u, 0u)
            check("search screen with a total", found.total >= 1uL && found.items.any { it.id == id }) { found.toString() }
            val sha = center.record(id).photos.firstOrNull()
            check("record lists its photo", sha != null)
            val jpeg = center.photo(sha!!)
            check("photo downloaded for viewing", jpeg.size > 2 && jpeg[0] == 0xFF.toByte() && jpeg[1] == 0xD8.toByte()) { "${jpeg.size} bytes" }
            check("tasks point at whoever can act", phone.myTasks(50u).none { it.id == id }) { "the grid member cannot act on an accepted record" }

            try {
                GridlinkClient.open(File(tmp, "x").path, base).login("wangfang", "wrong", "手机")
                check("wrong password refused", false)
            } catch (e: GridlinkException.Auth) {
                check("wrong password refused", e.userMessage().contains("用户名或密码错误"))
            }
            sync.close()
        }
    } finally {
        server.destroy()
    }
    println("$passed passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
