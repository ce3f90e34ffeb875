package gridlink.shell

import uniffi.gridlink_ffi.ActionInput
import uniffi.gridlink_ffi.GridlinkClient
import uniffi.gridlink_ffi.GridlinkException
import uniffi.gridlink_ffi.IncidentInput
import uniffi.gridlink_ffi.RecordDetail
import uniffi.gridlink_ffi.RecordSummaryView
import uniffi.gridlink_ffi.SyncObserver
import uniffi.gridlink_ffi.SyncReportView
import uniffi.gridlink_ffi.SyncStatusView
import java.text.SimpleDateFormat
import java.util.Date
import java.util.TimeZone

/** What a screen shows when an action fails: the library's message, already in Chinese. */
fun GridlinkException.userMessage(): String = message ?: "操作失败"

/** The report-an-incident screen: fields, photos taken offline, and submit. */
class ReportViewModel(private val client: GridlinkClient) {
    val categories = client.categories()
    var category: String = ""
    var title: String = ""
    var description: String = ""
    var address: String = ""
    var latitude: Double? = null
    var longitude: Double? = null
    val photoPaths = mutableListOf<String>()
    var error: String? = null
        private set

    /** Files the report (works offline). Returns the record id, or null with [error] set. */
    fun submit(): String? {
        if (title.isBlank()) {
            error = "请填写标题"
            return null
        }
        return try {
            val id = client.reportIncident(
                IncidentInput(category, title, description, address, null, latitude, longitude, false, "现场上报"),
            )
            photoPaths.forEach { client.attachPhoto(id, it) }
            error = null
            id
        } catch (e: GridlinkException) {
            error = e.userMessage()
            null
        }
    }
}

/** "我的任务": what waits for me, soonest deadline first, with the overdue count. */
class TasksViewModel(private val client: GridlinkClient) {
    var tasks: List<RecordSummaryView> = emptyList()
        private set
    var overdueCount = 0
        private set

    fun refresh() {
        tasks = client.myTasks(50u)
        overdueCount = client.overdue(200u).size
    }
}

/** A record's screen: details, the full timeline, and the buttons the rules allow. */
class RecordViewModel(private val client: GridlinkClient, val id: String) {
    var detail: RecordDetail = client.record(id)
        private set
    var error: String? = null
        private set

    val buttons: List<String> get() = detail.allowed.map { it.label }

    fun timelineLines(): List<String> = detail.timeline.map { t ->
        val mark = t.conflict?.let { "(冲突未生效)" } ?: ""
        "${formatTime(t.timeMs)} ${t.actorName}(${t.roleLabel}) ${t.actionLabel} ${t.note}$mark".trim()
    }

    fun perform(action: ActionInput, note: String = ""): Boolean = try {
        detail = client.perform(id, action, note)
        error = null
        true
    } catch (e: GridlinkException) {
        error = e.userMessage()
        false
    }

    fun reload() {
        detail = client.record(id)
    }
}

/** The sync status line, kept current by the library's observer callback. */
class SyncStatusViewModel(private val client: GridlinkClient) : SyncObserver {
    var status: SyncStatusView? = null
        private set
    private val subscription = client.observeSync(this)

    override fun onStatus(status: SyncStatusView) {
        this.status = status
    }

    /** E.g. "待上传 2 条,照片 1 张" or "已同步 · 上次 10:42" or the last error. */
    fun line(): String {
        val s = status ?: return "尚未同步"
        s.lastError?.let { return "同步失败:$it" }
        if (s.pending > 0 || s.pendingPhotos > 0) return "待上传 ${s.pending} 条,照片 ${s.pendingPhotos} 张"
        return s.lastSuccessMs?.let { "已同步 · 上次 ${formatTime(it)}" } ?: "尚未同步"
    }

    /** Runs a sync if the scheduler says so. */
    suspend fun syncIfDue(scheduler: SyncScheduler, decision: SyncScheduler.Decision, nowMs: Long): SyncReportView? {
        if (decision !is SyncScheduler.Decision.SyncNow) return null
        return try {
            val r = client.syncNow()
            scheduler.onResult(true, nowMs)
            r
        } catch (e: GridlinkException) {
            scheduler.onResult(false, nowMs)
            null
        }
    }

    fun close() = subscription.cancel()
}

internal fun formatTime(ms: Long): String =
    SimpleDateFormat("MM-dd HH:mm").apply { timeZone = TimeZone.getTimeZone("Asia/Shanghai") }.format(Date(ms))
