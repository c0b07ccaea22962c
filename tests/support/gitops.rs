//! GitOps as Flux does it, minus the source controller: a real Git repository whose commits are
//! revisions ([`GitRepo`]), served as Flux artifacts over loopback HTTP ([`Artifacts`]) and
//! published in an ExternalArtifact's status ([`Source`]), which the real kustomize-controller
//! fetches, verifies, builds, dry-runs and applies.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::json;

/// Output of a command the test runs, panicking unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A real Git repository with branch `main`; each revision is a commit.
pub struct GitRepo {
    pub dir: PathBuf,
}

impl GitRepo {
    pub fn init(dir: PathBuf) -> GitRepo {
        std::fs::create_dir_all(&dir).unwrap();
        let repo = GitRepo { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        run(Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args([
                "-c",
                "user.name=connect-gate e2e",
                "-c",
                "user.email=e2e@connect-gate.invalid",
            ])
            .args(["-c", "commit.gpgsign=false"])
            .args(args))
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.join(rel)).unwrap();
    }

    /// Commits everything; returns the Flux revision `main@sha1:<commit>`.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
        format!("main@sha1:{}", self.git(&["rev-parse", "HEAD"]).trim())
    }

    /// `git archive` of HEAD as a gzipped tarball.
    pub fn archive(&self) -> Vec<u8> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["archive", "--format=tar.gz", "HEAD"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git archive: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Serves artifact tarballs over HTTP on loopback, as a Flux source controller serves its
/// artifacts; remembers which files were fetched.
#[derive(Clone, Default)]
pub struct Artifacts {
    pub files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    pub fetched: Arc<Mutex<Vec<String>>>,
}

async fn serve_artifact(State(a): State<Artifacts>, UrlPath(file): UrlPath<String>) -> impl IntoResponse {
    a.fetched.lock().unwrap().push(file.clone());
    match a.files.lock().unwrap().get(&file) {
        Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl Artifacts {
    pub async fn start() -> (Artifacts, String) {
        let artifacts = Artifacts::default();
        let app = axum::Router::new()
            .route("/{*file}", axum::routing::get(serve_artifact))
            .with_state(artifacts.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (artifacts, base)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ExternalArtifact the Kustomization reads: the test plays the artifact producer, writing
/// its status as Flux's source API defines it.
pub struct Source {
    name: String,
    api: Api<DynamicObject>,
    artifacts: Artifacts,
    base_url: String,
}

impl Source {
    /// Creates ExternalArtifact `name` in `namespace` and starts serving its artifacts.
    pub async fn create(kube: &kube::Client, namespace: &str, name: &str) -> Source {
        let gvk = GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "ExternalArtifact");
        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), namespace, &ApiResource::from_gvk(&gvk));
        let object = DynamicObject::new(name, &ApiResource::from_gvk(&gvk)).data(json!({"spec": {}}));
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating ExternalArtifact {name}: {e}"));
        let (artifacts, base_url) = Artifacts::start().await;
        Source {
            name: name.to_string(),
            api,
            artifacts,
            base_url,
        }
    }

    /// Publishes HEAD of `repo` as the source's artifact, revision `revision`.
    pub async fn publish(&self, repo: &GitRepo, revision: &str) {
        let tarball = repo.archive();
        let digest = format!("sha256:{}", sha256_hex(&tarball));
        let commit = revision.rsplit(':').next().unwrap();
        let file = format!("externalartifact/{}/{commit}.tar.gz", self.name);
        let size = tarball.len();
        self.artifacts.files.lock().unwrap().insert(file.clone(), tarball);
        let now = utc_now();
        let status = json!({"status": {
            "artifact": {
                "path": file,
                "url": format!("{}/{file}", self.base_url),
                "revision": revision,
                "digest": digest,
                "size": size,
                "lastUpdateTime": now,
            },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Succeeded",
                "message": format!("stored artifact for revision '{revision}'"),
                "lastTransitionTime": now, "observedGeneration": 1,
            }],
        }});
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("publishing {revision} in ExternalArtifact status: {e}"));
    }

    pub fn fetched(&self, commit_of: &str) -> bool {
        let commit = commit_of.rsplit(':').next().unwrap();
        self.artifacts
            .fetched
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.contains(commit))
    }
}

/// RFC 3339 UTC "now", second precision (as metav1.Time serializes).
pub fn utc_now() -> String {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(Timestamp::now().as_second())
        .unwrap()
        .to_string()
}
