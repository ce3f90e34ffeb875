//! The one error type of the core crate.
//!
//! Messages are in Chinese because they reach grid members and officials through the phone app and
//! the console. They never carry personal data: an invalid ID number is reported without the number.

use crate::org::Role;
use crate::workflow::{ActionKind, Status};

/// Everything that can go wrong in the core. Each variant changes nothing in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The local database failed (disk full, locked, I/O).
    #[error("本地数据库错误: {0}")]
    Storage(#[from] rusqlite::Error),
    /// Stored or received Automerge bytes cannot be decoded.
    #[error("记录 {id} 的数据已损坏,无法读取")]
    CorruptDocument { id: String },
    /// A change received from elsewhere is not a valid Automerge change.
    #[error("收到的变更数据无效")]
    CorruptChange,
    /// The document decodes but does not have the shape of a Gridlink record.
    #[error("记录 {id} 的结构不符合要求: {reason}")]
    MalformedRecord { id: String, reason: String },
    /// Changes arrived without the earlier changes they build on; nothing was applied.
    #[error("变更缺少前置数据,需要重新同步")]
    MissingDependencies,
    #[error("找不到记录 {0}")]
    NotFound(String),
    #[error("事件分类代码 {0} 不在分类目录中")]
    UnknownCategory(String),
    #[error("服务事项代码 {0} 不在事项清单中")]
    UnknownServiceItem(String),
    #[error("目录文件有误: {0}")]
    Catalog(String),
    #[error("组织机构代码 {0} 格式不正确")]
    InvalidUnitCode(String),
    #[error("尚未登录:请先设置当前用户身份")]
    NoIdentity,
    /// The acting role may not take this action at all, or not on this record.
    #[error("{role}无权执行“{action}”:{reason}")]
    NotAllowed { action: ActionKind, role: Role, reason: String },
    /// The person may not edit the record's fields (only read it).
    #[error("{role}无权编辑该记录的内容:{reason}")]
    EditNotAllowed { role: Role, reason: String },
    /// The action is not possible in the record's current state.
    #[error("当前状态为“{status}”,不能执行“{action}”")]
    InvalidTransition { action: ActionKind, status: Status },
    #[error("“{action}”必须填写说明(原因)")]
    NoteRequired { action: ActionKind },
    /// A timeline entry carries a timestamp that cannot be right (far future or before 2020).
    #[error("时间戳异常:设备时间可能有误,请校准后重试")]
    AbsurdClock,
    #[error("身份证号码无效(长度、出生日期或校验位不正确)")]
    InvalidIdNumber,
    #[error("手机号码格式不正确")]
    InvalidPhone,
    #[error("输入有误: {0}")]
    InvalidInput(String),
    #[error("照片无法处理: {0}")]
    Photo(String),
}

/// Result alias of the core crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
