package cn.gridlink.app

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.foundation.layout.Column
import androidx.compose.material3.Button
import androidx.compose.material3.Text
import gridlink.shell.SyncStatusViewModel
import gridlink.shell.TasksViewModel
import uniffi.gridlink_ffi.GridlinkClient

/** The task list and the sync line; every decision is made in kotlin-shell. */
class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val client = GridlinkClient.open(filesDir.path, BuildConfig.SERVER_URL)
        val tasks = TasksViewModel(client).apply { refresh() }
        val sync = SyncStatusViewModel(client)
        setContent {
            Column {
                Text(sync.line())
                tasks.tasks.forEach { Text("${it.number} ${it.title} ${it.statusLabel}") }
                Button(onClick = { client.backgroundSync() }) { Text("同步") }
            }
        }
    }
}
