package gridlink.shell

/**
 * When the phone syncs: on regaining connectivity, when the app comes to the foreground, and
 * periodically; after a failure it waits with exponential backoff; on low battery it defers
 * periodic syncs (a user's explicit action still goes through). Pure logic: the Android and iOS
 * shells feed it events and act on its decisions.
 */
class SyncScheduler(
    private val periodMs: Long = 15 * 60_000L,
    private val firstBackoffMs: Long = 30_000L,
    private val maxBackoffMs: Long = 60 * 60_000L,
) {
    sealed class Decision {
        object SyncNow : Decision()
        data class Wait(val untilMs: Long) : Decision()
    }

    var online = true
        private set
    var batteryLow = false
        private set
    private var failures = 0
    private var lastAttemptMs = 0L

    /** The earliest time the next automatic sync may run. */
    fun nextDueMs(): Long {
        if (failures == 0) return lastAttemptMs + periodMs
        val backoff = (firstBackoffMs shl (failures - 1).coerceAtMost(16)).coerceAtMost(maxBackoffMs)
        return lastAttemptMs + backoff
    }

    private fun decide(nowMs: Long, urgent: Boolean): Decision = when {
        !online -> Decision.Wait(Long.MAX_VALUE)
        urgent && failures == 0 -> Decision.SyncNow
        batteryLow && !urgent -> Decision.Wait(maxOf(nextDueMs(), nowMs + periodMs))
        nowMs >= nextDueMs() -> Decision.SyncNow
        else -> Decision.Wait(nextDueMs())
    }

    fun onConnectivity(isOnline: Boolean, nowMs: Long): Decision {
        val regained = isOnline && !online
        online = isOnline
        if (regained) failures = 0
        return decide(nowMs, urgent = regained)
    }

    fun onForeground(nowMs: Long): Decision = decide(nowMs, urgent = true)

    fun onTick(nowMs: Long): Decision = decide(nowMs, urgent = false)

    fun onBattery(low: Boolean) {
        batteryLow = low
    }

    /** The user pressed "同步": always try when online. */
    fun onUserRequest(): Decision = if (online) Decision.SyncNow else Decision.Wait(Long.MAX_VALUE)

    fun onResult(success: Boolean, nowMs: Long) {
        lastAttemptMs = nowMs
        failures = if (success) 0 else failures + 1
    }
}
