//! `kubescaler explain`'s text: the pool, one row per node (class, servers, free slots, what
//! kubescaler does with it or why not), then the plan's actions and warnings. The same facts
//! as `--output json` and `/debug/plan`, for a person at 3 a.m.

use std::fmt::Write as _;

use crate::planner::{NodeExplanation, Plan};

/// The plan as a table and lists.
pub fn render(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pool: cloud target {}, {} nodes registered ({} active, {} booting, {} not ready, {} provisioning, {} cordoned by kubescaler, {} by others, {} deleting, {} outside the pool)",
        s.target_size,
        s.registered_nodes,
        s.active_nodes,
        s.booting_nodes,
        s.not_ready_nodes,
        s.provisioning_nodes,
        s.cordoned_by_kubescaler,
        s.cordoned_by_others,
        s.deleting_nodes,
        s.outside_pool_nodes
    );
    let _ = writeln!(
        out,
        "slots: available {} (free {} + incoming {} - pending {}), buffer {}{}",
        s.available_slots,
        s.free_slots,
        s.incoming_slots,
        s.pending_servers,
        s.buffer,
        s.buffer_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let Some(held) = &s.scale_down_held {
        let _ = writeln!(out, "scale-down: {held}");
    }
    out.push('\n');
    // A column is as wide as its header or its widest cell.
    let width = |header: &str, cell: fn(&NodeExplanation) -> usize| {
        plan.nodes.iter().map(cell).fold(header.len(), usize::max)
    };
    let name_width = width("NODE", |n| n.name.len());
    let class_width = width("CLASS", |n| n.class.len());
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<class_width$}  {:>7}  {:>4}  WHAT KUBESCALER DOES",
        "NODE", "CLASS", "SERVERS", "FREE"
    );
    for n in &plan.nodes {
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<class_width$}  {:>7}  {:>4}  {}",
            n.name, n.class, n.servers, n.free_slots, n.verdict
        );
    }
    if plan.nodes.is_empty() {
        out.push_str("(no node matches node-selector)\n");
    }
    out.push_str("\nplan:\n");
    if plan.actions.is_empty() {
        out.push_str("  nothing to do\n");
    }
    for action in &plan.actions {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            action.kind().as_str(),
            action.node().unwrap_or("pool"),
            action.reason()
        );
    }
    if !plan.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}
