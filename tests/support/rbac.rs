//! Role rules for the identities tests run as (with `TestEnv::service_account_kubeconfig`).

/// What the reconciler may do, as deploy/base/rbac.yaml grants it (which names its Leases).
pub const RECONCILER_RULES: &str = r#"
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
"#;

/// Rights to edit ConfigMaps, and nothing else: what a team's GitOps identity has.
pub const CONFIGMAP_EDITOR_RULES: &str = r#"
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
"#;
