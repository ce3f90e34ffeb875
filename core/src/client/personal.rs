//! Residents' personal data on the device: sealed with the device's key, never in clear
//! (see [`crate::pii`]).

use crate::error::{CoreError, Result};
use crate::pii::{DataKey, Personal};
use crate::store::{self};

use super::*;

impl Client {
    /// The key to seal `personal` with: none needed when there is nothing to keep; an error when
    /// there is and this device has no key (it never logged in, or it was wiped), because
    /// personal data is never kept in clear.
    pub(super) fn key_for(&self, personal: &Personal) -> Result<Option<DataKey>> {
        if personal.is_empty() {
            return Ok(None);
        }
        self.data_key
            .clone()
            .map(Some)
            .ok_or_else(|| CoreError::InvalidInput("本机尚未取得个人信息密钥,请联网登录后再录入身份证号或电话".into()))
    }

    /// Sets the key personal data is sealed with on this device (from the server at login, or
    /// from the platform's key store after a restart); `None` forgets it.
    pub fn set_data_key(&mut self, key: Option<DataKey>) {
        self.data_key = key;
    }

    /// The personal-data key's bytes, for the platform's key store.
    pub fn data_key_bytes(&self) -> Option<Vec<u8>> {
        self.data_key.as_ref().map(|k| k.as_bytes().to_vec())
    }

    /// Whether this device holds its personal-data key now.
    pub fn has_data_key(&self) -> bool {
        self.data_key.is_some()
    }

    /// The full personal data of a record, when this device holds it and its key.
    pub fn personal(&self, id: &str) -> Result<Option<Personal>> {
        let (Some(key), Some((sealed, _))) = (&self.data_key, store::personal_get(&self.conn, id)?) else {
            return Ok(None);
        };
        key.open(id, &sealed).map(Some)
    }

    /// Personal data the server does not have yet, opened for the upload (none without the key).
    pub fn personal_pending(&self) -> Result<Vec<(String, Personal)>> {
        let Some(key) = &self.data_key else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (id, sealed) in store::personal_pending(&self.conn)? {
            if let Ok(p) = key.open(&id, &sealed) {
                out.push((id, p));
            }
        }
        Ok(out)
    }

    /// The server has (or has refused) these records' personal data: stop sending it.
    pub fn personal_delivered(&mut self, ids: &[String]) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        for id in ids {
            tx.execute("UPDATE personal SET pending = 0 WHERE doc_id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps personal data the server sent for a record this device holds, sealed; without the
    /// key, or for a record it does not hold, nothing is kept.
    pub fn receive_personal(&mut self, id: &str, data: &Personal) -> Result<()> {
        let Some(key) = self.data_key.clone() else { return Ok(()) };
        let tx = store::begin(&self.conn)?;
        if store::has_doc(&tx, id)? {
            store::personal_put(&tx, id, &key.seal(id, data), false)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Updates a record's kept personal data with `f` (an edit of a phone number), to be sent.
    pub(super) fn update_personal(&mut self, id: &str, f: impl FnOnce(&mut Personal)) -> Result<()> {
        let mut p = self.personal(id)?.unwrap_or_default();
        f(&mut p);
        let key = self.key_for(&p)?;
        if let Some(key) = key {
            let tx = store::begin(&self.conn)?;
            store::personal_put(&tx, id, &key.seal(id, &p), true)?;
            tx.commit()?;
        }
        Ok(())
    }
}
