import SwiftUI

/// The task list and the sync line over the generated Swift bindings (GridlinkClient).
struct ContentView: View {
    let client: GridlinkClient
    @State private var tasks: [RecordSummaryView] = []
    @State private var status = ""

    var body: some View {
        NavigationStack {
            List(tasks, id: \.id) { t in
                VStack(alignment: .leading) {
                    Text("\(t.number) \(t.title)")
                    Text(t.statusLabel).foregroundStyle(t.overdue ? .red : .secondary)
                }
            }
            .navigationTitle("我的任务")
            .toolbar { Button("同步") { Task { _ = try? await client.syncNow(); reload() } } }
            .onAppear(perform: reload)
            Text(status).font(.footnote)
        }
    }

    private func reload() {
        tasks = (try? client.myTasks(limit: 50)) ?? []
        status = (try? client.syncStatus()).map { "待上传 \($0.pending) 条" } ?? ""
    }
}
