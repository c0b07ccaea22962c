//! Test support for end-to-end tests against the real test stack
//! (`tests/stack/up`: etcd + kube-apiserver, a KRaft Kafka broker and a
//! distributed Kafka Connect worker, all on loopback).
//!
//! The stack is started OUTSIDE the test binary, by `tests/run` (or by
//! hand: `eval "$(tests/stack/up)"`), which exports KUBECONFIG, CONNECT_URL,
//! KAFKA_BOOTSTRAP, STACK_DIR, CONNECT_WORKER_CONFIG, CONNECT_PROVIDER_DIR and
//! CONNECT_GATE_STACK_ATTACH=1. This module only
//! attaches to it. If the stack is not there, every test that asks for it
//! panics with instructions: e2e tests never skip.
//!
//! Each test gets a [`TestEnv`]: its own namespace, its own connector-name
//! prefix, a `kube::Client`, the Connect URL, a kubectl helper, and cleanup on
//! drop (also when the test panics):
//!   * every connector whose name starts with the test's prefix is deleted;
//!   * every namespaced object in the test namespace is deleted
//!     (deletecollection over all discovered resource types), then the namespace
//!     is deleted and finalized (a stack without `--cluster` runs no
//!     kube-controller-manager, so nothing else would ever empty or remove it); objects that
//!     carry their own finalizers stay until the test removes them;
//!   * Connect workers started with [`TestEnv::start_connect_worker`] are stopped.
//!
//! Cluster-scoped objects (webhook configurations, CRDs, ...) are NOT cleaned up
//! here: a test that creates one must delete it itself.
//!
//! Modules (everything is re-exported here, so tests write `support::TestEnv`):
//!   * [`stack`](mod@stack): attaching to the stack ([`Stack`], [`stack()`], [`kube_client`]);
//!   * [`env`]: the per-test [`TestEnv`] and its cleanup ([`run_in_drop`], [`purge_namespace`],
//!     [`delete_namespace`]);
//!   * [`poll`]: polling until a condition holds ([`eventually`]);
//!   * [`worker_rest`]: [`WorkerRest`], the tests' raw Kafka Connect REST client;
//!   * [`workers`]: extra Connect [`Worker`]s;
//!   * [`flux`]: Flux's kustomize-controller on the stack ([`Flux`], `tests/stack/flux`);
//!   * [`gitops`]: a Git repository's commits served as Flux artifacts through an
//!     ExternalArtifact ([`gitops::GitRepo`], [`gitops::Source`]);
//!   * [`kubectl`]: running the stack's kubectl, as its admin or another user ([`kubectl_in`],
//!     [`kubectl_with`]);
//!   * [`process`]: the binary under test ([`BIN`], [`Process`], [`free_port`]);
//!   * [`names`]: unique names ([`random_suffix`]);
//!   * [`proxies`]: faults on loopback: a cuttable TCP proxy to the API server
//!     ([`proxies::CutProxy`]) and a recording HTTP proxy to a Connect worker ([`proxies::Recorder`]);
//!   * [`ccloud`]: a stand-in for Confluent Cloud's Connect API in front of a real worker
//!     ([`ccloud::CloudStandIn`]);
//!   * [`sidecar`]: the reconciler under test ([`sidecar::Sidecar`]) and the helpers its e2e
//!     tests share (declaring connectors, waiting on status, Events, the ledger, the worker);
//!   * [`webhooks`]: the shipped webhook registrations pointed at a test's `serve`
//!     ([`Registrations`]), a webhook-only `serve` registered so ([`Webhook`]), and a denial
//!     asserted as `kubectl apply` prints it ([`webhooks::assert_denied`]);
//!   * [`rbac`]: Role rules of the identities tests act as ([`RECONCILER_RULES`],
//!     [`CONFIGMAP_EDITOR_RULES`]).
#![allow(dead_code)] // each test crate uses a different part

pub mod ccloud;
mod env;
mod flux;
pub mod gitops;
mod kubectl;
mod names;
mod poll;
mod process;
pub mod proxies;
mod rbac;
pub mod sidecar;
mod stack;
pub mod webhooks;
mod worker_rest;
mod workers;

#[allow(unused_imports)] // each test crate uses a different part of these, too
pub use self::{
    env::{TestEnv, delete_namespace, purge_namespace, run_in_drop},
    flux::Flux,
    kubectl::{kubectl_in, kubectl_with},
    names::random_suffix,
    poll::eventually,
    process::{BIN, Process, free_port},
    rbac::{CONFIGMAP_EDITOR_RULES, RECONCILER_RULES},
    stack::{Stack, kube_client, run_script, stack},
    webhooks::{Registrations, Webhook},
    worker_rest::WorkerRest,
    workers::Worker,
};
