//! What the planner is given, built from what Kubernetes and the verdict pipeline hand over:
//! shared by the reconciler's pass and `connect-gate plan`, so that a plan is computed from the
//! very inputs a pass would compute it from.

use std::collections::BTreeMap;

use super::day2;
use super::fanout::{Placed, as_applied, homes, project};
use super::ledger::Ledgers;
use super::live::LiveState;
use super::plan::{self, AppliedHash, CmInput, Decl, Declared, Plan, PlanMemory, PlanOptions};
use super::status::json_annotation;
use crate::connect::destinations::LOCAL;
use crate::connect::registry::Destination;
use crate::pipeline::check::verdict::{Desired, Verdict};
use crate::pipeline::parse::manifest::{ANNOTATION_APPLIED, ANNOTATION_CONNECTORS, ANNOTATION_OPERATIONS};

/// A ConfigMap as the planner sees it: its name, whether it declares nothing any more
/// (`deleting`), whether it holds the finalizer, connect-gate's annotations on it and the
/// verdicts of its data keys (none while deleting).
pub fn cm_input(
    name: String,
    deleting: bool,
    has_finalizer: bool,
    annotations: &BTreeMap<String, String>,
    verdicts: &[Verdict],
) -> CmInput {
    CmInput {
        name,
        deleting,
        has_finalizer,
        keys: verdicts.iter().map(declared).collect(),
        managed: json_annotation(annotations, ANNOTATION_CONNECTORS),
        applied: json_annotation(annotations, ANNOTATION_APPLIED),
        operations: day2::decode(annotations.get(ANNOTATION_OPERATIONS)),
    }
}

/// A verdict as the planner sees it.
pub fn declared(v: &Verdict) -> Declared {
    let decl = if !v.accepted() {
        match (v.desired, &v.name) {
            (Desired::Absent, None) => Decl::Absent(None),
            _ => Decl::Rejected(v.name.clone()),
        }
    } else {
        match (v.desired, &v.connector) {
            (Desired::Present, Some(c)) => Decl::Apply(c.clone()),
            (Desired::Present, None) => Decl::Rejected(v.name.clone()),
            (Desired::Absent, _) => Decl::Absent(v.name.clone()),
        }
    };
    Declared {
        key: v.key.clone(),
        decl,
    }
}

/// The names a ConfigMap placed as `p` asks destination `id` about when the bulk listing leaves
/// them out: those it declares to run there, and those it manages that are there. A name it
/// declares absent is asked about only when a ledger holds it (the caller adds those): one that
/// someone else created a moment ago is seen by the next pass, and a converged namespace with
/// many disabled ConfigMaps costs no call for each.
pub fn interest<'a>(p: &'a Placed, ledgers: &'a Ledgers, id: &'a str) -> impl Iterator<Item = String> + 'a {
    let declared = p
        .input
        .accepted()
        .filter(move |_| p.target == id)
        .map(|c| c.name.clone());
    let managed = p
        .input
        .managed
        .keys()
        .filter(move |n| homes(ledgers, n, &p.target).contains(&id))
        .cloned();
    declared.chain(managed)
}

/// Destination `d`'s plan as a pass makes it, given the sidecar's `flags`: the ConfigMaps
/// projected onto it, a Confluent Cloud destination's live configs reduced to what connect-gate
/// sets (its server-side keys and hidden values are no difference), then the planner. Returns the
/// projected ConfigMaps too, which the plan's actions refer to.
pub fn plan_destination(
    active: &[Placed],
    ledgers: &Ledgers,
    d: &Destination,
    live: &mut LiveState,
    memory: &PlanMemory,
    flags: PlanOptions,
    hash: &AppliedHash,
) -> (Vec<CmInput>, Plan) {
    let inputs = project(active, ledgers, &d.id);
    if d.kind.is_cloud() {
        as_applied(&inputs, live, hash);
    }
    let options = PlanOptions {
        // Others may run connectors of their own on a shared cluster.
        prune_unmanaged: flags.prune_unmanaged && d.id == LOCAL,
        auto_restart: flags.auto_restart && !d.kind.is_cloud(),
    };
    let plan = plan::plan(&inputs, live, &ledgers.get(&d.id), memory, options, hash);
    (inputs, plan)
}
