//! [`GridlinkClient`]: the phone's one handle on its data and on sync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use gridlink_core::sync::{HttpTransport, SyncEngine};
use gridlink_core::{
    Client, GeoPoint, IncidentEdit, NewIncident, NewServiceRequest, RecordQuery, ServiceMode, ServiceRequestEdit, UnitCode, Urgency,
};

use crate::error::GridlinkError;
use crate::types::*;

type R<T> = Result<T, GridlinkError>;

/// Told about the sync status whenever it changes (implemented in Kotlin/Swift).
#[uniffi::export(with_foreign)]
pub trait SyncObserver: Send + Sync {
    fn on_status(&self, status: SyncStatusView);
}

/// Registered observers with their subscription ids.
type Observers = Mutex<Vec<(u64, Arc<dyn SyncObserver>)>>;

/// What the handle shares with its background work.
struct Shared {
    /// The store: taken for each piece of local work, never while a sync request is on the
    /// network, so the app's reads and writes never wait for a slow link.
    store: Mutex<Client>,
    /// The sync engine; replaced whole when the time limits change.
    engine: Mutex<Arc<SyncEngine<HttpTransport>>>,
    /// One sync, login or logout at a time.
    network: Mutex<()>,
}

impl Shared {
    fn engine(&self) -> Arc<SyncEngine<HttpTransport>> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The phone's store and sync engine. One per app install; safe to share between threads.
#[derive(uniffi::Object)]
pub struct GridlinkClient {
    shared: Arc<Shared>,
    observers: Arc<Observers>,
    next_observer: AtomicU64,
}

impl std::fmt::Debug for GridlinkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridlinkClient").finish_non_exhaustive()
    }
}

/// A registered observer; dropping it (or calling `cancel`) stops the notifications.
#[derive(uniffi::Object)]
pub struct SyncSubscription {
    id: u64,
    observers: Weak<Observers>,
}

impl std::fmt::Debug for SyncSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSubscription").field("id", &self.id).finish()
    }
}

#[uniffi::export]
impl SyncSubscription {
    /// Stops the notifications.
    pub fn cancel(&self) {
        if let Some(list) = self.observers.upgrade() {
            list.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _)| *id != self.id);
        }
    }
}

impl Drop for SyncSubscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the store consistent (every write is a transaction).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A record screen: the record with what the catalog and the person's role add to it — a service
/// request's item in words, its mode, materials and batch, and its resident in full only for
/// those who handle the errand (the station's clerks, a department holding it), masked for
/// everyone else.
fn detail(c: &Client, v: gridlink_core::RecordView) -> RecordDetail {
    use gridlink_core::pii::{mask_id_number, mask_name, mask_phone};
    use gridlink_core::{RecordBody, Role};
    let service = match &v.record.body {
        RecordBody::ServiceRequest(f) => {
            let s = &v.folded.state;
            // The full values only where this phone keeps them (sealed, for a person whose work
            // needs them); everyone else sees the masked forms the record holds.
            let personal = c.personal(&v.record.id).ok().flatten();
            let handles = personal.is_some()
                || c.identity().is_some_and(|me| {
                    matches!(me.role, Role::StationStaff | Role::DepartmentHandler)
                        && (me.unit == f.station || s.holder.as_ref() == Some(&me.unit))
                });
            let item = c.catalog().service_item(&f.item).ok();
            Some(ServiceRequestDetail {
                item_code: f.item.clone(),
                item_name: item.map_or_else(|| f.item.clone(), |i| i.name.clone()),
                mode: f.mode.as_str().into(),
                mode_label: f.mode.label().into(),
                station: f.station.to_string(),
                materials: f.materials.iter().map(|(name, received)| MaterialItem { name: name.clone(), received: *received }).collect(),
                missing_materials: s.missing_materials.clone(),
                batch_id: s.batch_id.clone(),
                resident_name: if handles { f.resident.name.clone() } else { mask_name(&f.resident.name) },
                resident_id_number: personal
                    .as_ref()
                    .and_then(|p| p.id_number.clone())
                    .or_else(|| f.resident.id_number.as_deref().map(mask_id_number)),
                resident_phone: personal.as_ref().and_then(|p| p.phone.clone()).or_else(|| f.resident.phone.as_deref().map(mask_phone)),
                personal_data_masked: personal.is_none(),
            })
        }
        RecordBody::Incident(_) => None,
    };
    let mut d = RecordDetail::from(v);
    if let Some(sr) = &service {
        d.title = format!("{}({})", sr.item_name, sr.resident_name);
    }
    d.service = service;
    d
}

/// Runs blocking work on its own thread and awaits it without any async runtime.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> R<T> + Send + 'static) -> R<T> {
    let (tx, rx) = futures_channel::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.await.map_err(|_| GridlinkError::Internal { message: "内部错误:后台任务意外中止".into() })?
}

impl GridlinkClient {
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> R<T>) -> R<T> {
        f(&mut lock(&self.shared.store))
    }

    fn notify(observers: &Observers, status: SyncStatusView) {
        let list: Vec<_> = observers.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, o)| o.clone()).collect();
        for o in list {
            o.on_status(status.clone());
        }
    }

    fn sync_blocking(shared: &Shared, observers: &Observers) -> R<SyncReportView> {
        Ok(Self::sync_raw(shared, observers)?.into())
    }

    fn sync_raw(shared: &Shared, observers: &Observers) -> Result<gridlink_core::sync::SyncReport, gridlink_core::sync::SyncError> {
        let result = {
            let _one_at_a_time = lock(&shared.network);
            shared.engine().sync_shared(&shared.store)
        };
        let status = SyncEngine::<HttpTransport>::status(&lock(&shared.store));
        if let Ok(s) = status {
            Self::notify(observers, s.into());
        }
        result
    }
}

#[uniffi::export]
impl GridlinkClient {
    /// Opens (creating) the store in the app's private directory, syncing with `server_url`.
    #[uniffi::constructor]
    pub fn open(app_dir: String, server_url: String) -> R<Arc<Self>> {
        std::fs::create_dir_all(&app_dir).map_err(|e| GridlinkError::Storage { message: format!("无法创建数据目录: {e}") })?;
        let client = Client::open(std::path::Path::new(&app_dir).join("gridlink.db"))?;
        let engine = SyncEngine::http(&server_url);
        Ok(Arc::new(Self {
            shared: Arc::new(Shared { store: Mutex::new(client), engine: Mutex::new(Arc::new(engine)), network: Mutex::new(()) }),
            observers: Arc::default(),
            next_observer: AtomicU64::new(1),
        }))
    }

    /// Logs in on this device. Another person than before starts from an empty store.
    pub async fn login(&self, username: String, password: String, device_name: String) -> R<PersonInfo> {
        let shared = self.shared.clone();
        off_thread(move || {
            let _one_at_a_time = lock(&shared.network);
            let engine = shared.engine();
            let login = engine.login(&mut lock(&shared.store), &username, &password, &device_name)?;
            Ok(PersonInfo::from(&login.person))
        })
        .await
    }

    /// Logs out; the records stay on the phone for the next login.
    pub async fn logout(&self) -> R<()> {
        let shared = self.shared.clone();
        off_thread(move || {
            let _one_at_a_time = lock(&shared.network);
            let engine = shared.engine();
            Ok(engine.logout(&mut lock(&shared.store))?)
        })
        .await
    }

    /// This phone's key for the residents' personal data it keeps (32 bytes), for the app to put
    /// in the platform's key store (Android Keystore, iOS Keychain) after a login. The store never
    /// holds it; after a restart the app hands it back with [`GridlinkClient::unlock`], or the
    /// next sync fetches it again from the server (never after a remote wipe).
    pub fn data_key(&self) -> Option<Vec<u8>> {
        lock(&self.shared.store).data_key_bytes()
    }

    /// Gives the store its personal-data key back from the platform's key store.
    pub fn unlock(&self, key: Vec<u8>) -> R<()> {
        let key = gridlink_core::pii::DataKey::from_bytes(&key)?;
        lock(&self.shared.store).set_data_key(Some(key));
        Ok(())
    }

    /// The logged-in person, if any.
    pub fn identity(&self) -> Option<PersonInfo> {
        lock(&self.shared.store).identity().map(PersonInfo::from)
    }

    /// Incident categories for the report form.
    pub fn categories(&self) -> Vec<CategoryInfo> {
        let g = lock(&self.shared.store);
        let c = g.catalog();
        c.categories
            .iter()
            .flat_map(|m| {
                m.minors.iter().map(move |x| CategoryInfo {
                    code: x.code.clone(),
                    name: x.name.clone(),
                    major_code: m.code.clone(),
                    major_name: m.name.clone(),
                    time_limit: x.time_limit.label(),
                })
            })
            .collect()
    }

    /// Service items (事项清单) for the station's form.
    pub fn service_items(&self) -> Vec<ServiceItemInfo> {
        let g = lock(&self.shared.store);
        g.catalog()
            .service_items
            .iter()
            .map(|i| ServiceItemInfo {
                code: i.code.clone(),
                name: i.name.clone(),
                modes: i.modes.iter().map(|m| m.as_str().to_owned()).collect(),
                materials: i.materials.clone(),
                promised_days: i.promised_days,
            })
            .collect()
    }

    /// Reports an incident (works offline). Returns its id.
    pub fn report_incident(&self, input: IncidentInput) -> R<String> {
        let location = match (input.latitude, input.longitude) {
            (Some(lat), Some(lon)) => Some(GeoPoint::new(lat, lon)?),
            _ => None,
        };
        let grid = input.grid.as_deref().map(UnitCode::parse).transpose()?;
        self.with(|c| {
            Ok(c.create_incident(NewIncident {
                category: input.category,
                title: input.title,
                description: input.description,
                grid,
                address: input.address,
                location,
                urgency: if input.urgent { Urgency::Urgent } else { Urgency::Normal },
                parties: vec![],
                note: input.note,
            })?)
        })
    }

    /// Takes a service request (works offline). Returns its id.
    pub fn receive_service_request(&self, input: ServiceRequestInput) -> R<String> {
        let mode = ServiceMode::parse(&input.mode)
            .ok_or_else(|| GridlinkError::Invalid { message: format!("办理方式“{}”无效", input.mode) })?;
        self.with(|c| {
            Ok(c.create_service_request(NewServiceRequest {
                item: input.item,
                mode,
                station: None,
                resident_name: input.resident_name,
                resident_id_number: input.resident_id_number,
                resident_phone: input.resident_phone,
                materials_received: input.materials_received,
                description: input.description,
            })?)
        })
    }

    /// Edits an incident's text (concurrent edits merge character by character).
    pub fn edit_incident(&self, id: String, title: Option<String>, description: Option<String>, notes: Option<String>) -> R<RecordDetail> {
        self.with(|c| {
            let v = c.edit_incident(&id, IncidentEdit { title, description, notes, ..Default::default() })?;
            Ok(detail(c, v))
        })
    }

    /// Edits a service request: description, notes, materials now received, the resident's phone.
    pub fn edit_service_request(
        &self,
        id: String,
        description: Option<String>,
        notes: Option<String>,
        materials_received: Vec<String>,
        resident_phone: Option<String>,
    ) -> R<RecordDetail> {
        let materials = (!materials_received.is_empty()).then(|| materials_received.into_iter().map(|m| (m, true)).collect());
        self.with(|c| {
            let v = c.edit_service_request(&id, ServiceRequestEdit { description, notes, materials, resident_phone })?;
            Ok(detail(c, v))
        })
    }

    /// Signs for every errand of a hand-off batch held by my unit (town service center).
    pub fn receive_batch(&self, batch_id: String) -> R<Vec<String>> {
        self.with(|c| Ok(c.receive_batch(&batch_id)?))
    }

    /// Takes a workflow action; refused with a reason when the rules do not allow it.
    pub fn perform(&self, id: String, action: ActionInput, note: String) -> R<RecordDetail> {
        let action = action.into_action()?;
        self.with(|c| {
            let v = c.act(&id, action, &note)?;
            Ok(detail(c, v))
        })
    }

    /// A record with its timeline and the actions open to the current person.
    pub fn record(&self, id: String) -> R<RecordDetail> {
        self.with(|c| Ok(detail(c, c.get(&id)?)))
    }

    /// The full timeline of a record.
    pub fn timeline(&self, id: String) -> R<Vec<TimelineItem>> {
        Ok(self.record(id)?.timeline)
    }

    /// My tasks, soonest deadline first.
    pub fn my_tasks(&self, limit: u32) -> R<Vec<RecordSummaryView>> {
        self.with(|c| Ok(c.my_tasks(limit as usize)?.into_iter().map(Into::into).collect()))
    }

    /// A list screen: the records matching `filter`, a page at a time, with the number of all
    /// matches. Filters combine; an empty filter lists everything on the phone.
    pub fn list(&self, filter: ListFilter, limit: u32, offset: u32) -> R<RecordPageView> {
        self.with(|c| {
            let mut q = filter.to_query(c.now_ms())?;
            if filter.my_unit {
                q.holder = Some(c.identity().ok_or(gridlink_core::CoreError::NoIdentity)?.unit.clone());
            }
            q.limit = limit.clamp(1, 1000) as usize;
            q.offset = offset as usize;
            let page = c.list_page(&q)?;
            Ok(RecordPageView { items: page.items.into_iter().map(Into::into).collect(), total: page.total })
        })
    }

    /// The town's org units the phone knows (fetched at login), for names and pickers.
    pub fn units(&self) -> R<Vec<UnitOption>> {
        self.with(|c| Ok(c.org_units()?.iter().map(UnitOption::from).collect()))
    }

    /// A picker: the units the person may name as the target of `kind` (`dispatch`, `escalate`,
    /// `route`, `hand_off`) on record `id` now, checked by the same rules as the action.
    pub fn action_targets(&self, id: String, kind: String) -> R<Vec<UnitOption>> {
        let kind = gridlink_core::ActionKind::parse(&kind).ok_or_else(|| GridlinkError::Invalid {
            message: format!("未知的操作“{}”", kind.chars().take(20).collect::<String>()),
        })?;
        self.with(|c| Ok(c.action_targets(&id, kind)?.iter().map(UnitOption::from).collect()))
    }

    /// The department the catalog makes responsible for an incident category, if the phone knows it.
    pub fn responsible_department(&self, category: String) -> R<Option<UnitOption>> {
        self.with(|c| Ok(c.responsible_department(&category)?.as_ref().map(UnitOption::from)))
    }

    /// Open records whose deadline has passed.
    pub fn overdue(&self, limit: u32) -> R<Vec<RecordSummaryView>> {
        self.with(|c| {
            let q = RecordQuery { overdue_at: Some(c.now_ms()), limit: limit as usize, ..Default::default() };
            Ok(c.list(&q)?.into_iter().map(Into::into).collect())
        })
    }

    /// Records made on this phone that the server has not numbered yet.
    pub fn drafts(&self) -> R<Vec<RecordSummaryView>> {
        self.with(|c| {
            let all = c.list(&RecordQuery { limit: 1000, ..Default::default() })?;
            Ok(all.into_iter().filter(|s| s.display_no.starts_with("临-")).map(Into::into).collect())
        })
    }

    /// Open incidents within `radius_m` metres of a point, nearest first.
    pub fn nearby(&self, latitude: f64, longitude: f64, radius_m: f64) -> R<Vec<RecordSummaryView>> {
        self.with(|c| {
            let open = c.list(&RecordQuery { open_only: true, limit: 1000, ..Default::default() })?;
            let mut hits = Vec::new();
            for s in open {
                if let gridlink_core::RecordBody::Incident(f) = c.get(&s.id)?.record.body
                    && let Some(p) = f.location
                {
                    let d = distance_m(latitude, longitude, p.lat, p.lon);
                    if d <= radius_m {
                        hits.push((d, s));
                    }
                }
            }
            hits.sort_by(|a, b| a.0.total_cmp(&b.0));
            Ok(hits.into_iter().map(|(_, s)| s.into()).collect())
        })
    }

    /// Full-text search (Chinese substrings work).
    pub fn search(&self, text: String, limit: u32) -> R<Vec<RecordSummaryView>> {
        self.with(|c| Ok(c.search(&text, limit as usize)?.into_iter().map(Into::into).collect()))
    }

    /// Search a page at a time (at most 200 a page), with the number of all matches.
    pub fn search_page(&self, text: String, limit: u32, offset: u32) -> R<RecordPageView> {
        self.with(|c| {
            let page = c.search_page(&text, limit as usize, offset as usize)?;
            Ok(RecordPageView { items: page.items.into_iter().map(Into::into).collect(), total: page.total })
        })
    }

    /// Attaches a photo from a file (downscaled and stripped of metadata before it is queued).
    /// Returns the photo's SHA-256.
    pub fn attach_photo(&self, id: String, path: String) -> R<String> {
        let bytes = std::fs::read(&path).map_err(|e| GridlinkError::Invalid { message: format!("无法读取照片文件: {e}") })?;
        self.with(|c| Ok(c.attach_photo(&id, &bytes)?))
    }

    /// Syncs now (uploads photos and changes, downloads what is new).
    pub async fn sync_now(&self) -> R<SyncReportView> {
        let (shared, observers) = (self.shared.clone(), self.observers.clone());
        off_thread(move || Self::sync_blocking(&shared, &observers)).await
    }

    /// Syncs, retrying a failed network or server round with exponential backoff and jitter
    /// (5 attempts, 2 s doubling up to 5 min by default). The store is not held while waiting
    /// between attempts.
    pub async fn sync_with_retry(&self) -> R<SyncReportView> {
        let (shared, observers) = (self.shared.clone(), self.observers.clone());
        off_thread(move || {
            let policy = shared.engine().policy;
            let mut n = 0;
            loop {
                match Self::sync_raw(&shared, &observers) {
                    Err(e) if e.is_retryable() && n + 1 < policy.attempts => {
                        std::thread::sleep(policy.delay(n));
                        n += 1;
                    }
                    other => return Ok(other?.into()),
                }
            }
        })
        .await
    }

    /// The network time limits of sync (defaults suited to 2G: connect 15 s, answer 30 s, each
    /// body 120 s, a whole request 240 s).
    pub fn sync_timeouts(&self) -> SyncTimeoutsView {
        self.shared.engine().timeouts().into()
    }

    /// Changes the network time limits of sync; each must be at least 1 second.
    pub fn set_sync_timeouts(&self, timeouts: SyncTimeoutsView) -> R<()> {
        let t = timeouts.to_core()?;
        let mut engine = lock(&self.shared.engine);
        let mut next = (**engine).clone();
        next.set_timeouts(t);
        *engine = Arc::new(next);
        Ok(())
    }

    /// One bounded sync, blocking: the entry point for Android WorkManager / iOS BGTaskScheduler.
    pub fn background_sync(&self) -> R<SyncReportView> {
        Self::sync_blocking(&self.shared, &self.observers)
    }

    /// A photo's bytes (JPEG) by its SHA-256: from the phone if it holds it, else downloaded
    /// from the server and kept. The store is not held during the download.
    pub async fn photo(&self, sha256: String) -> R<Vec<u8>> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GridlinkError::Invalid { message: "照片编号应为64位十六进制的 SHA-256".into() });
        }
        let shared = self.shared.clone();
        off_thread(move || Ok(shared.engine().fetch_photo_shared(&shared.store, &sha256)?)).await
    }

    /// The notices for the person's unit (督办, work voided by concurrent actions), newest first,
    /// as of the last sync — also for records that have since left the phone.
    pub fn notices(&self) -> R<Vec<NoticeView>> {
        self.with(|c| Ok(c.notices()?.into_iter().map(|n| NoticeView { record_id: n.doc_id, time_ms: n.at_ms, text: n.text }).collect()))
    }

    /// The sync status line.
    pub fn sync_status(&self) -> R<SyncStatusView> {
        self.with(|c| Ok(SyncEngine::<HttpTransport>::status(c)?.into()))
    }

    /// Changes refused by the server, with the reasons (newest first).
    pub fn rejections(&self) -> R<Vec<String>> {
        self.with(|c| Ok(c.rejections()?.into_iter().map(|(_, reason, _)| reason).collect()))
    }

    /// Registers an observer of the sync status; it is told the current status at once.
    pub fn observe_sync(&self, observer: Arc<dyn SyncObserver>) -> R<Arc<SyncSubscription>> {
        let id = self.next_observer.fetch_add(1, Ordering::Relaxed);
        let status = self.sync_status()?;
        self.observers.lock().unwrap_or_else(|p| p.into_inner()).push((id, observer.clone()));
        observer.on_status(status);
        Ok(Arc::new(SyncSubscription { id, observers: Arc::downgrade(&self.observers) }))
    }
}

/// Great-circle distance in metres.
fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    6_371_000.0 * 2.0 * a.sqrt().asin()
}
