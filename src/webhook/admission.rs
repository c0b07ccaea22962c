//! Admission decisions for connector ConfigMaps, apart from the HTTPS transport: who may change
//! connect-gate's own records, which requests need a verdict, what the verdicts mean for the
//! request, the finalizer patch, and the AdmissionReview response body.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::{Value, json};

use crate::pipeline::check::verdict::Verdict;
use crate::pipeline::parse::manifest::{ANNOTATION_PREFIX, ConnectorConfigMap, FINALIZER, is_connector_configmap};

/// The denial of a request by anyone but `controller` (the reconciler's username; `None` when
/// unknown, and then nobody may) that changes connect-gate's records on a ConfigMap: its
/// `connect-gate.io/` annotations, or the removal of its finalizer. Adding the finalizer is
/// allowed to all: the mutating webhook puts it back within the user's own request, and it only
/// ever makes a delete wait for connect-gate.
pub fn guard(req: &AdmissionRequest<ConfigMap>, controller: Option<&str>) -> Option<String> {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return None;
    }
    let user = req.user_info.username.as_deref();
    if user.is_some() && user == controller {
        return None;
    }
    let changes = record_changes(req.old_object.as_ref(), req.object.as_ref()?);
    if changes.is_empty() {
        return None;
    }
    let who = controller.map_or(
        "whose username this webhook was not told: set --controller-username".into(),
        |c| c.to_string(),
    );
    Some(format!(
        "only connect-gate ({who}) may change its records on a ConfigMap, the {ANNOTATION_PREFIX} annotations and          the finalizer {FINALIZER}; this request changes {}. Leave them as they are; to free a ConfigMap stuck on          the finalizer, see connect-gate's README",
        changes.join(", ")
    ))
}

/// What a request changes of connect-gate's records (`old` is `None` on CREATE).
fn record_changes(old: Option<&ConfigMap>, new: &ConfigMap) -> Vec<String> {
    let ours = |cm: Option<&ConfigMap>| -> BTreeMap<String, String> {
        let annotations = cm.and_then(|c| c.metadata.annotations.clone()).unwrap_or_default();
        annotations
            .into_iter()
            .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
            .collect()
    };
    let (before, after) = (ours(old), ours(Some(new)));
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut changes: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("annotation {k}"))
        .collect();
    let holds = |cm: Option<&ConfigMap>| {
        cm.and_then(|c| c.metadata.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    };
    if holds(old) && !holds(Some(new)) {
        changes.push(format!("finalizer {FINALIZER} (removed)"));
    }
    changes
}

/// The ConfigMap a request asks to be judged, or `None` when it is allowed without a verdict:
/// other objects, DELETE, unlabelled ConfigMaps, a ConfigMap being deleted (its finalizer must
/// always be removable), and updates that leave labels and data alone (the reconciler's own
/// status writes must pass even when the template has since become invalid).
pub fn to_judge(req: &AdmissionRequest<ConfigMap>) -> Option<ConnectorConfigMap> {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return None;
    }
    let cm = req.object.as_ref()?;
    if cm.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if let (Operation::Update, Some(old)) = (&req.operation, &req.old_object) {
        let same =
            old.metadata.labels == cm.metadata.labels && old.data == cm.data && old.binary_data == cm.binary_data;
        if same {
            return None;
        }
    }
    let mut connector_cm = ConnectorConfigMap::from_configmap(cm, None)?;
    connector_cm.origin.namespace = connector_cm.origin.namespace.or_else(|| req.namespace.clone());
    if connector_cm.origin.name.is_empty() {
        connector_cm.origin.name = req.name.clone();
    }
    Some(connector_cm)
}

/// The answer to a request about a ConfigMap outside the namespace this sidecar reconciles, or
/// `None` inside it. Such a request is allowed without a verdict or a finalizer, whatever the
/// registrations select: its templates would run against this sidecar's secrets, and nothing
/// would ever remove its finalizer. A connector ConfigMap is told why in a warning.
pub fn outside_scope(req: &AdmissionRequest<ConfigMap>, reconciled: &str) -> Option<Decision> {
    if req.namespace.as_deref() == Some(reconciled) {
        return None;
    }
    let labelled = req
        .object
        .as_ref()
        .is_some_and(|cm| is_connector_configmap(cm.metadata.labels.as_ref()));
    let warnings = if labelled && matches!(req.operation, Operation::Create | Operation::Update) {
        vec![format!(
            "connect-gate reconciles namespace {reconciled} only; this ConfigMap is not judged and its connectors are not applied"
        )]
    } else {
        vec![]
    };
    Some(Decision::allow(warnings))
}

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The denial message; `None` allows.
    pub denial: Option<String>,
    pub warnings: Vec<String>,
}

impl Decision {
    pub fn allow(warnings: Vec<String>) -> Self {
        Self { denial: None, warnings }
    }

    pub fn deny(message: String, warnings: Vec<String>) -> Self {
        Self {
            denial: Some(message),
            warnings,
        }
    }
}

/// Turns verdicts into a decision covering every bad connector, not just the first.
pub fn decide(verdicts: &[Verdict]) -> Decision {
    let warnings: Vec<String> = verdicts
        .iter()
        .flat_map(|v| v.warnings.iter().map(move |w| format!("{}: {w}", v.location())))
        .collect();
    let messages: Vec<String> = verdicts.iter().flat_map(Verdict::messages).collect();
    if messages.is_empty() {
        return Decision::allow(warnings);
    }
    let rejected = verdicts.iter().filter(|v| !v.accepted()).count();
    let header = format!("connect-gate rejected {rejected} connector(s)");
    Decision::deny(format!("{header}:\n- {}", messages.join("\n- ")), warnings)
}

/// The finalizer patch for a labelled ConfigMap that lacks it; `None` when there is nothing
/// to add (idempotent) or the object is being deleted (finalizers cannot be added then).
pub fn finalizer_patch(req: &AdmissionRequest<ConfigMap>) -> Option<json_patch::Patch> {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return None;
    }
    let cm = req.object.as_ref()?;
    if !is_connector_configmap(cm.metadata.labels.as_ref()) || cm.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let patch = match &cm.metadata.finalizers {
        Some(f) if f.iter().any(|f| f == FINALIZER) => return None,
        Some(_) => json!([{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]),
        None => json!([{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]),
    };
    Some(serde_json::from_value(patch).expect("a valid JSON patch"))
}

/// The AdmissionReview v1 response. Written by hand because the apiserver expects `patch` as
/// base64, while kube-core serialises its `Vec<u8>` as an array of numbers (kube-rs #1781).
pub fn review(uid: &str, decision: &Decision, patch: Option<&json_patch::Patch>) -> Value {
    let mut response = json!({ "uid": uid, "allowed": decision.denial.is_none() });
    if let Some(message) = &decision.denial {
        response["status"] = json!({ "code": 403, "reason": "Forbidden", "message": message });
    }
    if !decision.warnings.is_empty() {
        response["warnings"] = json!(decision.warnings);
    }
    if let Some(patch) = patch {
        let bytes = serde_json::to_vec(patch).expect("a patch serialises");
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response })
}

/// A response for a body that is not a usable AdmissionReview.
pub fn invalid(message: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": { "uid": "", "allowed": false, "status": { "code": 400, "reason": "BadRequest", "message": message } }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;

    fn request(operation: &str, object: Value, old: Option<Value>) -> AdmissionRequest<ConfigMap> {
        request_by("flux", operation, object, old)
    }

    fn request_by(user: &str, operation: &str, object: Value, old: Option<Value>) -> AdmissionRequest<ConfigMap> {
        let review: AdmissionReview<ConfigMap> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "cm", "namespace": "team", "operation": operation,
                "userInfo": {"username": user},
                "object": object, "oldObject": old, "dryRun": true
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn cm(labels: Value, data: Value, finalizers: Option<Vec<&str>>) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cm", "labels": labels, "finalizers": finalizers}, "data": data})
    }

    #[test]
    fn only_labelled_creates_and_real_updates_are_judged() {
        let labelled = cm(json!({"destination": "connect"}), json!({"k": "{}"}), None);
        let judged = to_judge(&request("CREATE", labelled.clone(), None)).unwrap();
        assert_eq!(judged.origin.to_string(), "ConfigMap team/cm");
        assert!(to_judge(&request("CREATE", cm(json!({"app": "x"}), json!({}), None), None)).is_none());
        let annotated = {
            let mut v = labelled.clone();
            v["metadata"]["annotations"] = json!({"connect-gate.io/status": "x"});
            v
        };
        assert!(to_judge(&request("UPDATE", annotated, Some(labelled.clone()))).is_none());
        let changed = cm(json!({"destination": "connect"}), json!({"k": "{\"name\": 1}"}), None);
        assert!(to_judge(&request("UPDATE", changed, Some(labelled.clone()))).is_some());
        let mut deleting = labelled.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-24T10:00:00Z");
        assert!(to_judge(&request("UPDATE", deleting, Some(labelled))).is_none());
    }

    const CONTROLLER: &str = "system:serviceaccount:connect:connect-gate";

    /// A reconciled ConfigMap: finalizer, managed names and status as the reconciler wrote them.
    fn reconciled() -> Value {
        let mut v = cm(
            json!({"destination": "connect"}),
            json!({"a.json": "{}"}),
            Some(vec![FINALIZER]),
        );
        v["metadata"]["annotations"] = json!({
            "connect-gate.io/connectors": r#"{"a":"a.json"}"#,
            "connect-gate.io/status": "{}",
            "team": "orders",
        });
        v
    }

    #[test]
    fn only_the_controller_changes_connect_gates_annotations_or_removes_its_finalizer() {
        let old = reconciled();
        let guarded = |user: &str, new: &Value| {
            guard(
                &request_by(user, "UPDATE", new.clone(), Some(old.clone())),
                Some(CONTROLLER),
            )
        };
        let mut forged = old.clone();
        forged["metadata"]["annotations"]["connect-gate.io/connectors"] =
            json!(r#"{"a":"a.json","some-connector":"nokey"}"#);
        let denial = guarded("flux", &forged).unwrap();
        assert!(
            denial.contains(&format!("only connect-gate ({CONTROLLER})")),
            "{denial}"
        );
        assert!(
            denial.contains("this request changes annotation connect-gate.io/connectors."),
            "{denial}"
        );
        assert_eq!(guarded(CONTROLLER, &forged), None, "the reconciler's own writes pass");
        // Removed annotations and the finalizer's removal count, also on a ConfigMap being deleted.
        let mut stripped = old.clone();
        stripped["metadata"]["annotations"] = json!({"team": "orders"});
        stripped["metadata"]["finalizers"] = json!([]);
        stripped["metadata"]["deletionTimestamp"] = json!("2026-11-24T10:00:00Z");
        let denial = guarded("operator", &stripped).unwrap();
        assert!(
            denial.contains("annotation connect-gate.io/connectors, annotation connect-gate.io/status, finalizer connect-gate.io/cleanup (removed)"),
            "{denial}"
        );
        assert_eq!(guarded(CONTROLLER, &stripped), None);
        // What is the user's stays the user's: data, labels, other annotations.
        let mut edited = old.clone();
        edited["data"] = json!({"a.json": "{\"name\": \"a\"}"});
        edited["metadata"]["annotations"]["team"] = json!("payments");
        assert_eq!(guarded("flux", &edited), None);
    }

    #[test]
    fn creating_with_connect_gates_annotations_is_refused_but_the_finalizer_may_be_added() {
        let create = |object: Value| guard(&request_by("flux", "CREATE", object, None), Some(CONTROLLER));
        assert!(
            create(reconciled())
                .unwrap()
                .contains("annotation connect-gate.io/connectors")
        );
        let finalized = cm(json!({"destination": "connect"}), json!({}), Some(vec![FINALIZER]));
        assert_eq!(
            create(finalized.clone()),
            None,
            "the mutating webhook puts it back in the user's request"
        );
        let unfinalized = cm(json!({"destination": "connect"}), json!({}), None);
        let update = request_by("flux", "UPDATE", finalized, Some(unfinalized));
        assert_eq!(guard(&update, Some(CONTROLLER)), None);
    }

    #[test]
    fn without_a_known_controller_nobody_changes_the_records() {
        let mut forged = reconciled();
        forged["metadata"]["annotations"]["connect-gate.io/status"] = json!("forged");
        let req = request_by(CONTROLLER, "UPDATE", forged, Some(reconciled()));
        assert!(guard(&req, None).unwrap().contains("set --controller-username"));
        let untouched = request_by("flux", "UPDATE", reconciled(), Some(reconciled()));
        assert_eq!(guard(&untouched, None), None);
    }

    #[test]
    fn finalizer_patch_is_idempotent_and_base64_encoded() {
        let none = cm(json!({"destination": "connect"}), json!({}), None);
        let patch = finalizer_patch(&request("CREATE", none, None)).unwrap();
        let body = review("u1", &Decision::allow(vec![]), Some(&patch));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(body["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            json!([{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
        );
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        let other = cm(json!({"destination": "connect"}), json!({}), Some(vec!["x/y"]));
        let patch = serde_json::to_value(finalizer_patch(&request("CREATE", other, None)).unwrap()).unwrap();
        assert_eq!(patch[0]["path"], "/metadata/finalizers/-");
        let has = cm(json!({"destination": "connect"}), json!({}), Some(vec![FINALIZER]));
        assert!(finalizer_patch(&request("UPDATE", has.clone(), Some(has))).is_none());
        assert!(finalizer_patch(&request("CREATE", cm(json!({}), json!({}), None), None)).is_none());
    }

    #[test]
    fn configmaps_outside_the_reconciled_namespace_are_allowed_unjudged_and_unpatched() {
        let labelled = cm(json!({"destination": "connect"}), json!({"k": "{"}), None);
        assert_eq!(outside_scope(&request("CREATE", labelled.clone(), None), "team"), None);
        let decision = outside_scope(&request("CREATE", labelled.clone(), None), "connectors").unwrap();
        assert_eq!(decision.denial, None);
        assert_eq!(
            decision.warnings,
            [
                "connect-gate reconciles namespace connectors only; this ConfigMap is not judged and its connectors are not applied"
            ]
        );
        let update = outside_scope(&request("UPDATE", labelled.clone(), Some(labelled)), "connectors").unwrap();
        assert_eq!(update.warnings.len(), 1);
        // Not a connector ConfigMap: nothing to say.
        let other = outside_scope(
            &request("CREATE", cm(json!({"app": "x"}), json!({}), None), None),
            "connectors",
        );
        assert_eq!(other, Some(Decision::allow(vec![])));
    }

    #[test]
    fn denial_carries_code_message_and_warnings() {
        let body = review("u1", &Decision::deny("bad".into(), vec!["w".into()]), None);
        assert_eq!(body["response"]["allowed"], false);
        assert_eq!(body["response"]["status"]["code"], 403);
        assert_eq!(body["response"]["status"]["message"], "bad");
        assert_eq!(body["response"]["warnings"][0], "w");
        assert_eq!(body["response"]["uid"], "u1");
    }
}
