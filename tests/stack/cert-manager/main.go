// Command cert-manager runs cert-manager's own controllers, out of cluster, against the test
// stack's kube-apiserver (tests/stack/cert-manager-ctl start), so that certs/ and the
// cert-manager.io/inject-ca-from annotations of webhook/ behave as in a user's cluster.
//
// cert-manager publishes its binaries' mains (cmd/controller, cmd/cainjector) as modules of their
// own that the module proxy does not serve; this main wires the same packages of the root module
// github.com/cert-manager/cert-manager (version: go.mod) the way those mains do, in one process.
//
// What runs (the names are cert-manager's controller names):
//   - issuers, clusterissuers: set Ready on Issuers / ClusterIssuers of the SelfSigned and CA
//     types (only those issuer types are linked in);
//   - certificates-trigger, -key-manager, -request-manager, -issuing, -readiness,
//     -revision-manager, -metrics: the Certificate life cycle (issue on create, on spec change,
//     on a missing or mismatched Secret, on `Issuing=True` set by hand as `cmctl renew` does, and
//     renewal at renewBefore / 2/3 of the duration), old CertificateRequests pruned;
//   - certificaterequests-approver (cert-manager's built-in approver, on by default: marks every
//     CertificateRequest Approved), certificaterequests-issuer-selfsigned and -issuer-ca: sign the
//     requests;
//   - the CA injector (cert-manager's cainjector): caBundle of ValidatingWebhookConfigurations,
//     MutatingWebhookConfigurations, APIServices and CustomResourceDefinitions from the
//     annotations cert-manager.io/inject-ca-from (a Certificate's Secret),
//     inject-ca-from-secret and inject-apiserver-ca.
//
// What does not run: ACME (issuers, orders, challenges), Vault, Venafi and external issuers; the
// ingress/Gateway certificate shims; the CertificateSigningRequest controllers; leader election
// (one process); the metrics TLS and pprof of cert-manager's binaries. And cert-manager's own
// webhook: the API server does no defaulting, validation, or CertificateRequest user-info
// stamping of cert-manager resources beyond the CRDs' OpenAPI schemas, so a malformed Issuer or
// Certificate is accepted and only reported by the controllers (conditions, Events, log).
//
// Listeners, all optional and loopback-only: --health-address (/livez; /readyz answers 200 once
// every informer cache has synced and the controllers run), --metrics-address (cert-manager's
// Prometheus metrics), --cainjector-metrics-address (controller-runtime's metrics of the CA
// injector). Logs (klog) go to stderr; -v=2 is cert-manager's info level.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	certmetrics "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"         // the CA issuer type
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned" // the SelfSigned issuer type
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	logsapi "k8s.io/component-base/logs/api/v1"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// The controllers run, in cert-manager's registry (controller.Known()) by name.
var controllers = []string{
	issuers.ControllerName,
	clusterissuers.ControllerName,
	trigger.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	issuing.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
	certmetrics.ControllerName,
	approver.ControllerName,
	crselfsigned.CRControllerName,
	crca.CRControllerName,
}

func main() {
	fs := pflag.NewFlagSet("cert-manager", pflag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server (default $KUBECONFIG)")
	healthAddr := fs.String("health-address", "", "loopback host:port for /livez and /readyz; empty: none")
	metricsAddr := fs.String("metrics-address", "", "loopback host:port for cert-manager's metrics; empty: none")
	injectorMetricsAddr := fs.String("cainjector-metrics-address", "", "loopback host:port for the CA injector's metrics; empty: none")
	clusterResourceNamespace := fs.String("cluster-resource-namespace", "kube-system", "namespace of the Secrets that ClusterIssuers read")
	workers := fs.Int("workers", 5, "workers per controller")
	logCfg := logsapi.NewLoggingConfiguration()
	logCfg.Verbosity = 2
	logf.AddFlagsNonDeprecated(logCfg, fs)
	_ = fs.Parse(os.Args[1:])

	logf.InitLogs()
	defer logf.FlushLogs()
	if err := logf.ValidateAndApply(logCfg); err != nil {
		fail(err)
	}
	ctrl.SetLogger(logf.Log)
	for _, a := range []string{*healthAddr, *metricsAddr, *injectorMetricsAddr} {
		if err := loopback(a); err != nil {
			fail(err)
		}
	}
	if *kubeconfig == "" {
		fail(errors.New("--kubeconfig (or $KUBECONFIG) is required"))
	}
	if bi, ok := debug.ReadBuildInfo(); ok { // the version in User-Agents and logs
		for _, d := range bi.Deps {
			if d.Path == "github.com/cert-manager/cert-manager" {
				util.AppVersion = d.Version
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log)
	if err := run(ctx, *kubeconfig, *healthAddr, *metricsAddr, *injectorMetricsAddr, *clusterResourceNamespace, *workers); err != nil {
		fail(err)
	}
}

func run(ctx context.Context, kubeconfig, healthAddr, metricsAddr, injectorMetricsAddr, clusterResourceNamespace string, workers int) error {
	log := logf.FromContext(ctx)
	log.Info("starting", "version", util.AppVersion, "controllers", controllers)
	g, gctx := errgroup.WithContext(ctx)
	var ready atomic.Bool

	// ---- cert-manager's controller (cmd/controller/app: buildControllerContextFactory, Run),
	// with the defaults of its ControllerConfiguration.
	factory, err := controller.NewContextFactory(gctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace:        clusterResourceNamespace,
			ClusterIssuerAmbientCredentials: true,
		},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return err
	}
	cmctx, err := factory.Build()
	if err != nil {
		return err
	}
	known := controller.Known()
	for _, name := range controllers {
		iface, err := known[name](factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		g.Go(func() error { return iface.Run(workers, gctx) })
	}
	if metricsAddr != "" {
		cmctx.Metrics.SetupCertificateCollector(cmctx.SharedInformerFactory.Certmanager().V1().Certificates().Lister())
		cmctx.Metrics.SetupIssuerCollector(cmctx.SharedInformerFactory.Certmanager().V1().Issuers().Lister())
		cmctx.Metrics.SetupClusterIssuerCollector(cmctx.SharedInformerFactory.Certmanager().V1().ClusterIssuers().Lister())
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return err
		}
		serve(g, gctx, cmctx.Metrics.NewServer(ln), ln)
	}
	cmctx.SharedInformerFactory.Start(gctx.Done())
	cmctx.KubeSharedInformerFactory.Start(gctx.Done())

	// ---- cert-manager's cainjector (cmd/cainjector/app: Run), every injectable kind.
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmscheme.AddToScheme(scheme))
	utilruntime.Must(apiext.AddToScheme(scheme))
	utilruntime.Must(apireg.AddToScheme(scheme))
	if injectorMetricsAddr == "" {
		injectorMetricsAddr = "0" // controller-runtime: no metrics server
	}
	mgr, err := ctrl.NewManager(util.RestConfigWithUserAgent(restConfig, "cainjector"), ctrl.Options{
		Scheme: scheme,
		Cache:  cache.Options{ReaderFailOnMissingInformer: true},
		// As cainjector: Secrets are read from the API server, only their metadata is cached.
		Client:         client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		LeaderElection: false,
		Metrics:        metricsserver.Options{BindAddress: injectorMetricsAddr},
	})
	if err != nil {
		return fmt.Errorf("cainjector manager: %w", err)
	}
	if err := cainjector.RegisterAllInjectors(gctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
			cainjector.APIServiceName:                     true,
			cainjector.CustomResourceDefinitionName:       true,
		},
	}); err != nil {
		return fmt.Errorf("cainjector: %w", err)
	}
	g.Go(func() error { return mgr.Start(gctx) })

	// ---- readiness: every informer of both halves has synced.
	g.Go(func() error {
		for n, ok := range cmctx.KubeSharedInformerFactory.WaitForCacheSync(gctx.Done()) {
			if !ok {
				return fmt.Errorf("informer %s did not sync", n)
			}
		}
		for t, ok := range cmctx.SharedInformerFactory.WaitForCacheSync(gctx.Done()) {
			if !ok {
				return fmt.Errorf("informer %v did not sync", t)
			}
		}
		if !mgr.GetCache().WaitForCacheSync(gctx) {
			return errors.New("the CA injector's caches did not sync")
		}
		ready.Store(true)
		log.Info("ready: informer caches synced, controllers and CA injector running")
		return nil
	})
	if healthAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Load() {
				http.Error(w, "informer caches not synced", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})
		ln, err := net.Listen("tcp", healthAddr)
		if err != nil {
			return err
		}
		serve(g, gctx, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln)
	}

	err = g.Wait()
	cmctx.SharedInformerFactory.Shutdown()
	cmctx.KubeSharedInformerFactory.Shutdown()
	if err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// serve runs srv on ln until ctx ends.
func serve(g *errgroup.Group, ctx context.Context, srv *http.Server, ln net.Listener) {
	g.Go(func() error {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(c)
	})
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// loopback accepts "" and host:port with a loopback host.
func loopback(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s: only loopback addresses are allowed", addr)
	}
	return nil
}

func fail(err error) {
	logf.Log.Error(err, "cert-manager failed")
	logf.FlushLogs()
	os.Exit(1)
}
