package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	encryptioncontroller "k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	utilversion "k8s.io/component-base/version"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/netutil"
	"github.com/hakube/hakube/internal/pki"
)

// APIServerConfig configures kube-apiserver.
type APIServerConfig struct {
	TLSDir pki.Dir
	// CertDir is where the apiserver writes certificates of its own.
	CertDir string
	// Port is the loopback port the apiserver listens on; the supervisor fronts
	// it on AdvertisePort, which the cluster is told to use.
	Port, AdvertisePort int
	AdvertiseIP         net.IP
	ServiceCIDR         string
	NodePortRange       string
	ClusterDomain       string
	Datastore           datastore.Datastore
	// EncryptionConfig is an EncryptionConfiguration for Secrets at rest,
	// reloaded when it changes; "" stores them in clear for good.
	EncryptionConfig string
	// ExtraArgs are passed through verbatim (--kube-apiserver-arg), last so they win.
	ExtraArgs []string
}

// APIServer is the kube-apiserver component.
type APIServer struct {
	cfg APIServerConfig
	run runner
}

// NewAPIServer returns the kube-apiserver component.
func NewAPIServer(cfg APIServerConfig) *APIServer { return &APIServer{cfg: cfg} }

// Name implements component.Component.
func (a *APIServer) Name() string { return "kube-apiserver" }

// URL is where the apiserver listens.
func (a *APIServer) URL() string { return "https://127.0.0.1:" + strconv.Itoa(a.cfg.Port) }

// Init checks that the loopback port is free.
// EncryptionReload is how often the apiserver rereads its
// EncryptionConfiguration: a key change waits for every server's apiserver
// to load each step, three times per rotation, and the apiserver's default
// of a minute would make that three minutes.
const EncryptionReload = 5 * time.Second

func (a *APIServer) Init(context.Context) error {
	// The apiserver offers no option for it, only this variable ("exposed
	// so that integration tests can crank up the reload speed"). One
	// apiserver per process, set before it starts.
	encryptioncontroller.EncryptionConfigFileChangePollDuration = EncryptionReload
	return netutil.CheckPortFree("127.0.0.1", a.cfg.Port, "the internal apiserver port (--https-listen-port + 1)")
}

func (a *APIServer) args() []string {
	t := a.cfg.TLSDir
	ep := a.cfg.Datastore.Endpoint()
	args := []string{
		"--advertise-address=" + a.cfg.AdvertiseIP.String(),
		"--allow-privileged=true",
		"--anonymous-auth=false",
		"--authorization-mode=Node,RBAC",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(a.cfg.Port),
		"--cert-dir=" + a.cfg.CertDir,
		"--client-ca-file=" + t.Cert(pki.ClientCA),
		"--enable-admission-plugins=NodeRestriction",
		// Webhooks and aggregated APIs are reached at an endpoint's pod IP, not the Service's
		// ClusterIP: a ClusterIP needs kube-proxy on this server and a route for the service CIDR
		// on the host, which an air-gapped node with no default route lacks (the conformance
		// suite's webhook specs timed out on such hosts).
		"--enable-aggregator-routing=true",
		"--etcd-servers=" + strings.Join(ep.URLs, ","),
		"--kubelet-certificate-authority=" + t.Cert(pki.ServerCA),
		"--kubelet-client-certificate=" + t.Cert(KubeletClient),
		"--kubelet-client-key=" + t.Key(KubeletClient),
		// Node names need not resolve on servers: kubectl logs and exec reach kubelets by IP.
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--profiling=false",
		"--proxy-client-cert-file=" + t.Cert(AuthProxyCert),
		"--proxy-client-key-file=" + t.Key(AuthProxyCert),
		"--requestheader-allowed-names=" + AuthProxyUser,
		"--requestheader-client-ca-file=" + t.Cert(pki.RequestHeaderCA),
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		// Bounds the HTTP shutdown to 2s; otherwise open watches hold it for the request timeout (60s).
		"--shutdown-send-retry-after=true",
		"--service-account-issuer=https://kubernetes.default.svc." + a.cfg.ClusterDomain,
		"--service-account-key-file=" + t.Path(pki.ServiceKey),
		"--service-account-signing-key-file=" + t.Path(pki.ServiceKey),
		"--service-cluster-ip-range=" + a.cfg.ServiceCIDR,
		"--service-node-port-range=" + a.cfg.NodePortRange,
		"--storage-backend=etcd3",
		"--tls-cert-file=" + t.Cert(ServingCert),
		"--tls-private-key-file=" + t.Key(ServingCert),
	}
	if ep.CAFile != "" {
		args = append(args, "--etcd-cafile="+ep.CAFile)
	}
	if ep.CertFile != "" {
		args = append(args, "--etcd-certfile="+ep.CertFile, "--etcd-keyfile="+ep.KeyFile)
	}
	if a.cfg.EncryptionConfig != "" {
		// Reloaded when it changes, so new keys need no restart.
		args = append(args, "--encryption-provider-config="+a.cfg.EncryptionConfig, "--encryption-provider-config-automatic-reload=true")
	}
	return append(args, a.cfg.ExtraArgs...)
}

// Start runs the apiserver in the background.
func (a *APIServer) Start(context.Context) error {
	s := options.NewServerRunOptions()
	if err := parseFlags("kube-apiserver", s.Flags(), a.args()); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	// Silence client-go warnings on the loopback client, as upstream's binary does.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	a.run.start(func(ctx context.Context) error {
		completed, err := s.Complete(ctx)
		if err != nil {
			return err
		}
		if errs := completed.Validate(); len(errs) != 0 {
			return utilerrors.NewAggregate(errs)
		}
		return a.serve(ctx, completed)
	})
	return nil
}

// serve does what upstream's app.Run does, except that the apiserver
// advertises the supervisor's port: the endpoints of the kubernetes Service
// and the discovery address take the port from the listener, and the one the
// apiserver listens on is loopback-only, so pods could not reach the API at
// the Service IP. The listener is wrapped once the loopback client, which
// must reach the apiserver itself, has been configured.
func (a *APIServer) serve(ctx context.Context, opts options.CompletedOptions) error {
	klog.Infof("Version: %+v", utilversion.Get())
	name, err := cache.NewInformerName("kube-apiserver")
	if err != nil {
		return err
	}
	opts.InformerName = name
	config, err := app.NewConfig(opts)
	if err != nil {
		return err
	}
	for _, ss := range []*genericapiserver.SecureServingInfo{config.KubeAPIs.ControlPlane.Generic.SecureServing,
		config.ApiExtensions.GenericConfig.SecureServing, config.Aggregator.GenericConfig.SecureServing} {
		if _, done := ss.Listener.(advertisedListener); !done {
			ss.Listener = advertisedListener{Listener: ss.Listener, port: a.cfg.AdvertisePort}
		}
	}
	// Upstream's "Serving securely on" line shows the advertised port too.
	klog.Infof("kube-apiserver listens on 127.0.0.1:%d; the cluster is told port %d, the supervisor's", a.cfg.Port, a.cfg.AdvertisePort)
	completed, err := config.Complete()
	if err != nil {
		return err
	}
	server, err := app.CreateServerChain(completed)
	if err != nil {
		return err
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		return err
	}
	return prepared.Run(ctx)
}

// advertisedListener reports another port as its address.
type advertisedListener struct {
	net.Listener
	port int
}

func (l advertisedListener) Addr() net.Addr {
	addr := *l.Listener.Addr().(*net.TCPAddr)
	addr.Port = l.port
	return &addr
}

// Ready waits until /readyz answers ok.
func (a *APIServer) Ready(ctx context.Context) error {
	client, err := a.adminHTTPClient()
	if err != nil {
		return err
	}
	// Every 100 ms: each poll it is late by is a cold start's delay.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-a.run.done:
			return fmt.Errorf("kube-apiserver exited: %w", a.run.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		resp, err := client.Get(a.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
}

func (a *APIServer) adminHTTPClient() (*http.Client, error) {
	t := a.cfg.TLSDir
	cert, err := pki.LoadKeyPair(t.Cert(AdminCert), t.Key(AdminCert))
	if err != nil {
		return nil, err
	}
	ca, err := pki.PoolFromFile(t.Cert(pki.ServerCA))
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: ca, GetClientCertificate: cert.GetClientCertificate, MinVersion: tls.VersionTLS12,
		}},
	}, nil
}

// Failed implements component.Failer: the apiserver fails if it stops.
func (a *APIServer) Failed() <-chan error {
	ch := make(chan error, 1)
	go func() {
		<-a.run.done
		ch <- fmt.Errorf("stopped: %w", a.run.err)
	}()
	return ch
}

// Stop shuts the apiserver down gracefully.
func (a *APIServer) Stop() error {
	if a.run.cancel == nil {
		return nil
	}
	a.run.cancel()
	a.run.cancel = nil
	select {
	case <-a.run.done:
		if err := a.run.err; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	case <-time.After(30 * time.Second):
		return errors.New("kube-apiserver did not stop within 30s")
	}
	return nil
}
