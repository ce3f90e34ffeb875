//! The scripted histories of the demo town: what grid members report, and the steps that leave
//! an incident in each stage of its life.

use gridlink_core::Action;

use super::town::{TOWN, code};

pub(super) const REPORTS: [(&str, &str, &str); 16] = [
    ("0501", "村口垃圾堆积", "村口桥头有大量生活垃圾堆积,已有异味,影响群众出行。"),
    ("0502", "垃圾桶满溢", "集市旁两个垃圾桶已满,垃圾散落地面。"),
    ("0503", "河边倾倒建筑垃圾", "河堤路东段新增约3车建筑垃圾,占用半幅路面。"),
    ("0505", "田间焚烧秸秆", "二组农田有人焚烧秸秆,烟雾较大。"),
    ("0802", "路灯不亮", "村委会至小学路段三盏路灯夜间不亮,学生晚自习回家不安全。"),
    ("0801", "道路坑洼", "通村公路K3处路面塌陷,形成约1米见方的坑。"),
    ("0803", "井盖缺失", "老街菜市场门口井盖缺失,已用树枝临时标示。"),
    ("0101", "宅基地边界纠纷", "两户村民因宅基地边界围墙发生争执,情绪激动。"),
    ("0102", "家庭矛盾", "一对夫妻因赡养老人问题多次争吵,需调解。"),
    ("0104", "工地拖欠工资", "建筑工地十余名工人反映被拖欠两个月工资。"),
    ("0401", "消防通道被占", "商住楼后消防通道被杂物和车辆占用。"),
    ("0403", "楼道电动车充电", "居民楼一楼楼道内有电动车飞线充电。"),
    ("0602", "违章搭建彩钢棚", "临街商铺在屋顶违规搭建彩钢棚约40平方米。"),
    ("0701", "占道经营", "早市摊贩占用主干道经营,造成交通拥堵。"),
    ("0905", "危房住人", "一户独居老人仍居住在C级危房内。"),
    ("1201", "独居老人需探访", "八十五岁独居老人近期身体不适,子女在外务工。"),
];

/// Which stage an incident is left in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Path {
    New,
    SelfResolved,
    VillageClosed,
    Escalated,
    AcceptedTown,
    Dispatched,
    Returned,
    InProgress,
    Extension,
    Handled,
    FailedVerification,
    Verified,
    Closed,
    Evaluated,
    Suspended,
}

pub(super) const PATHS: [(Path, usize); 15] = [
    (Path::New, 5),
    (Path::SelfResolved, 3),
    (Path::VillageClosed, 3),
    (Path::Escalated, 4),
    (Path::AcceptedTown, 2),
    (Path::Dispatched, 4),
    (Path::Returned, 1),
    (Path::InProgress, 3),
    (Path::Extension, 1),
    (Path::Handled, 3),
    (Path::FailedVerification, 1),
    (Path::Verified, 2),
    (Path::Closed, 3),
    (Path::Evaluated, 5),
    (Path::Suspended, 1),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    Grid,
    Village,
    Center,
    Dept,
}

pub(super) fn incident_steps(path: Path) -> Vec<(Who, Action, &'static str)> {
    use Who::*;
    let up = [
        (Grid, Action::Escalate { to_unit: code(TOWN) }, ""), // fixed below: to the village
        (Village, Action::Escalate { to_unit: code(TOWN) }, "需镇里协调相关部门处置"),
        (Center, Action::Accept, ""),
    ];
    let dispatch = (Center, Action::Dispatch { to_unit: code(TOWN), deadline_ms: None }, "请按时限处置并反馈"); // target fixed below
    let mut s: Vec<(Who, Action, &'static str)> = Vec::new();
    let town = |s: &mut Vec<_>, n: usize| s.extend(up.iter().take(n).cloned());
    match path {
        Path::New => {}
        Path::SelfResolved => {
            // Fixed on the spot: the self-resolution is made on the phone with the report.
            s.push((Village, Action::Verify, ""));
            s.push((Village, Action::Close, ""));
            s.push((Grid, Action::Evaluate { satisfaction: 5 }, "群众满意"));
        }
        Path::VillageClosed => {
            s.push((Village, Action::Accept, ""));
            s.push((Village, Action::Dispatch { to_unit: code(TOWN), deadline_ms: None }, "请网格员协调处理")); // to the grid
            s.push((Grid, Action::Sign, ""));
            s.push((Grid, Action::Handle { photos: vec![] }, "已协调处理完毕"));
            s.push((Village, Action::Verify, ""));
            s.push((Village, Action::Close, ""));
            s.push((Grid, Action::Evaluate { satisfaction: 4 }, ""));
        }
        Path::Escalated => town(&mut s, 2),
        Path::AcceptedTown => town(&mut s, 3),
        Path::Suspended => {
            town(&mut s, 3);
            s.push((Center, Action::Suspend, "涉及历史遗留问题,需县级部门会商,暂挂账"));
        }
        _ => {
            town(&mut s, 3);
            s.push(dispatch.clone());
            let rest: &[(Who, Action, &'static str)] = &[
                (Dept, Action::Sign, ""),
                (Dept, Action::Handle { photos: vec![] }, "已按要求处置完毕"),
                (Grid, Action::Verify, "现场核查属实"),
                (Center, Action::Close, ""),
                (Grid, Action::Evaluate { satisfaction: 5 }, "群众满意"),
            ];
            let n = match path {
                Path::Dispatched => 0,
                Path::Returned => {
                    s.push((Dept, Action::Return, "不属于本单位职责,请改派"));
                    0
                }
                Path::InProgress => 1,
                Path::Extension => {
                    s.push(rest[0].clone());
                    s.push((Dept, Action::RequestExtension { until_ms: 0 }, "需协调机械设备,申请延期"));
                    0
                }
                Path::Handled => 2,
                Path::FailedVerification => {
                    s.extend(rest[..2].iter().cloned());
                    s.push((Grid, Action::FailVerification, "现场仍有遗留,未处置到位"));
                    0
                }
                Path::Verified => 3,
                Path::Closed => 4,
                _ => 5,
            };
            s.extend(rest[..n].iter().cloned());
        }
    }
    s
}
