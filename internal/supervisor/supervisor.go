// Package supervisor serves the cluster's own HTTPS endpoints (/ping, and the
// join API registered by others) on the public port and proxies everything else
// to the apiserver, so one address serves both.
package supervisor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/netutil"
	"github.com/hakube/hakube/internal/pki"
)

// Config configures the supervisor.
type Config struct {
	BindAddress string
	Port        int
	// ServerCAFile verifies the apiserver.
	ServerCAFile string
	// CertFile and KeyFile are the serving certificate.
	CertFile, KeyFile string
	// ClientCAFile verifies client certificates, which are forwarded as identities.
	ClientCAFile string
	// ProxyCertFile and ProxyKeyFile authenticate the supervisor to the apiserver
	// as the request-header front proxy.
	ProxyCertFile, ProxyKeyFile string
	// APIServerURL is where the apiserver listens.
	APIServerURL string
}

// Supervisor is the public HTTPS endpoint.
type Supervisor struct {
	cfg      Config
	mux      *http.ServeMux
	listener net.Listener
	server   *http.Server
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns a supervisor; add handlers with Handle before Start.
func New(cfg Config) *Supervisor {
	s := &Supervisor{cfg: cfg, mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hakube_supervisor_requests_total",
			Help: "Requests to the supervisor port by endpoint (\"/\" is the apiserver proxy) and status code."}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hakube_supervisor_request_duration_seconds",
			Help: "Time to answer the supervisor's own endpoints (the proxy excluded: watches last for minutes).", Buckets: prometheus.DefBuckets}, []string{"endpoint"}),
	}
	s.mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("pong"))
	})
	return s
}

// Collectors are the supervisor's metrics.
func (s *Supervisor) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.requests, s.duration}
}

// instrument counts each request under the pattern that serves it.
func (s *Supervisor) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := s.mux.Handler(r)
		if pattern == "" {
			pattern = "none"
		}
		began := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.requests.WithLabelValues(pattern, strconv.Itoa(rec.code)).Inc()
		if pattern != "/" {
			s.duration.WithLabelValues(pattern).Observe(time.Since(began).Seconds())
		}
	})
}

// statusRecorder remembers the status code; Flush and Unwrap keep streaming
// (watches) and HTTP/2 working through the wrapper.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Handle registers a handler for one of the cluster's own endpoints.
func (s *Supervisor) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Name implements component.Component.
func (s *Supervisor) Name() string { return "supervisor" }

// Init claims the public port, so a port in use fails before anything is written.
func (s *Supervisor) Init(context.Context) error {
	l, err := netutil.Listen(s.cfg.BindAddress, s.cfg.Port, "the HTTPS port (--https-listen-port on --bind-address)")
	if err != nil {
		return err
	}
	s.listener = l
	return nil
}

// Start serves HTTPS.
func (s *Supervisor) Start(context.Context) error {
	// Read again when renewed: the server never restarts for a certificate.
	cert, err := pki.LoadKeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return err
	}
	// Read again when changed: a CA rotation trusts a new client CA
	// before this server restarts.
	clientCAs, err := pki.LoadPoolFile(s.cfg.ClientCAFile)
	if err != nil {
		return err
	}
	proxy, err := s.apiserverProxy()
	if err != nil {
		return err
	}
	s.mux.Handle("/", proxy)
	s.server = &http.Server{
		Handler:           s.instrument(s.mux),
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{
			GetCertificate: cert.GetCertificate,
			// Certificates are optional: joiners and token-authenticated clients have none.
			ClientAuth: tls.VerifyClientCertIfGiven,
			// A resumed session is not verified against the client CA again:
			// after a CA rotation, a certificate of the old CA must be refused.
			SessionTicketsDisabled: true,
			MinVersion:             tls.VersionTLS12,
			NextProtos:             []string{"h2", "http/1.1"},
		},
	}
	base := s.server.TLSConfig
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := clientCAs.Pool()
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.GetConfigForClient, c.ClientCAs = nil, pool
		return c, nil
	}
	l := tls.NewListener(s.listener, s.server.TLSConfig)
	go func() {
		if err := s.server.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.Errorf("supervisor stopped serving: %v", err)
		}
	}()
	return nil
}

// Stop closes the listener and waits briefly for requests in flight.
func (s *Supervisor) Stop() error {
	if s.server == nil {
		if s.listener != nil {
			_ = s.listener.Close()
			s.listener = nil
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.server.Shutdown(ctx)
	s.server = nil
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // long-running watches are cut, as a restart would
	}
	return err
}

// apiserverProxy forwards to the apiserver as its request-header front proxy: a
// client certificate verified here becomes X-Remote-User/Group; any such headers
// a client sent are dropped so nobody can assert an identity.
func (s *Supervisor) apiserverProxy() (http.Handler, error) {
	target, err := url.Parse(s.cfg.APIServerURL)
	if err != nil {
		return nil, err
	}
	proxyCert, err := pki.LoadKeyPair(s.cfg.ProxyCertFile, s.cfg.ProxyKeyFile)
	if err != nil {
		return nil, err
	}
	rootCAs, err := pki.PoolFromFile(s.cfg.ServerCAFile)
	if err != nil {
		return nil, err
	}
	transport := func() *upgradeTransport {
		return newUpgradeTransport(&http.Transport{
			TLSClientConfig: &tls.Config{
				RootCAs:              rootCAs,
				GetClientCertificate: proxyCert.GetClientCertificate,
				MinVersion:           tls.VersionTLS12,
			},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 100,
			IdleConnTimeout:     90 * time.Second,
		})
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			for name := range r.Out.Header {
				if strings.HasPrefix(strings.ToLower(name), "x-remote-") {
					r.Out.Header.Del(name)
				}
			}
			if r.In.TLS != nil && len(r.In.TLS.VerifiedChains) > 0 {
				setIdentity(r.Out.Header, r.In.TLS.VerifiedChains[0][0])
			}
		},
		Transport:     &renewingTransport{cert: proxyCert, build: transport, cur: transport(), gen: proxyCert.Generation()},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			klog.V(2).Infof("proxy to apiserver: %v", err)
			http.Error(w, "the apiserver is not available yet", http.StatusServiceUnavailable)
		},
	}, nil
}

// upgradeTransport sends connection upgrades (exec, attach, port-forward)
// over HTTP/1.1 and everything else over h2. net/http keeps only WebSocket
// upgrades off h2; an SPDY upgrade would go out on the h2 connection to the
// apiserver and fail there ("invalid Connection request header"), so a
// kubectl falling back to SPDY, or an older one, got 503 instead of the
// apiserver's answer (the conformance suite's attach-denying webhook spec).
type upgradeTransport struct{ h2, h1 http.RoundTripper }

func newUpgradeTransport(t *http.Transport) *upgradeTransport {
	h1 := t.Clone()
	h1.ForceAttemptHTTP2 = false
	h1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // non-nil and empty: no h2
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return &upgradeTransport{h2: t, h1: h1}
}

func (u *upgradeTransport) closeIdle() {
	for _, t := range []http.RoundTripper{u.h1, u.h2} {
		t.(*http.Transport).CloseIdleConnections()
	}
}

// renewingTransport moves to new connections when the proxy's certificate
// is renewed: the apiserver authenticates the proxy at every request, so a
// connection made with the old certificate fails once that expires. Requests
// in flight (watches) end on the old connections, which then idle out.
type renewingTransport struct {
	cert  *pki.KeyPair
	build func() *upgradeTransport

	mu  sync.Mutex
	cur *upgradeTransport
	gen uint64 // the certificate's generation when cur was built
}

func (t *renewingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.mu.Lock()
	if g := t.cert.Generation(); g != t.gen {
		t.cur.closeIdle()
		t.cur, t.gen = t.build(), g
		klog.Infof("supervisor: the auth proxy's certificate was renewed; new connections to the apiserver use it")
	}
	cur := t.cur
	t.mu.Unlock()
	return cur.RoundTrip(r)
}

func (u *upgradeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return u.h1.RoundTrip(r)
			}
		}
	}
	return u.h2.RoundTrip(r)
}

func setIdentity(h http.Header, cert *x509.Certificate) {
	h.Del("Authorization")
	h.Set("X-Remote-User", cert.Subject.CommonName)
	for _, g := range cert.Subject.Organization {
		h.Add("X-Remote-Group", g)
	}
}
