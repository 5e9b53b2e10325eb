// Package metrics serves Prometheus metrics of the datastore and the
// supervisor on their own port (2381, as K3s serves etcd's), on loopback
// unless exposed.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/netutil"
)

// DefaultPort is where metrics are served.
const DefaultPort = 2381

// Config configures the metrics listener.
type Config struct {
	// Hosts are the addresses to listen on, each with Port.
	Hosts []string
	Port  int
	// Collectors returns what to serve besides the process-wide default
	// registry (where embedded etcd registers its metrics); it is called at
	// Start, once the components it reads are running.
	Collectors func() []prometheus.Collector
	// Pprof serves Go's profiles under /debug/pprof/ on the loopback
	// listener only: profiles reveal internals and cost CPU to take.
	Pprof bool
}

// Server is the metrics component.
type Server struct {
	cfg       Config
	listeners []net.Listener
	server    *http.Server
}

// New returns the component.
func New(cfg Config) *Server { return &Server{cfg: cfg} }

func (s *Server) Name() string { return "metrics" }

// Init claims the ports.
func (s *Server) Init(context.Context) error {
	for _, h := range s.cfg.Hosts {
		l, err := netutil.Listen(h, s.cfg.Port, "the metrics port")
		if err != nil {
			s.closeListeners()
			return err
		}
		s.listeners = append(s.listeners, l)
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		_ = l.Close()
	}
	s.listeners = nil
}

// Start serves /metrics.
func (s *Server) Start(context.Context) error {
	reg := prometheus.NewRegistry()
	if s.cfg.Collectors != nil {
		for _, c := range s.cfg.Collectors() {
			if err := reg.Register(c); err != nil {
				return err
			}
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, reg}, promhttp.HandlerOpts{}))
	local := mux
	if s.cfg.Pprof {
		local = http.NewServeMux()
		local.Handle("/", mux)
		local.HandleFunc("/debug/pprof/", pprof.Index)
		local.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		local.HandleFunc("/debug/pprof/profile", pprof.Profile)
		local.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		local.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// WriteTimeout is left unset: a CPU profile streams for its whole duration.
	s.server = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok && a.IP.IsLoopback() {
			local.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})}
	for _, l := range s.listeners {
		go func() {
			if err := s.server.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				klog.Errorf("metrics: %v", err)
			}
		}()
		ip := l.Addr().(*net.TCPAddr).IP
		klog.Infof("metrics: serving http://%s/metrics", net.JoinHostPort(ip.String(), strconv.Itoa(s.cfg.Port)))
		if s.cfg.Pprof && ip.IsLoopback() {
			klog.Infof("metrics: serving Go profiles at http://%s/debug/pprof/", net.JoinHostPort(ip.String(), strconv.Itoa(s.cfg.Port)))
		}
	}
	return nil
}

// Stop closes the listeners.
func (s *Server) Stop() error {
	if s.server == nil {
		s.closeListeners()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.server.Shutdown(ctx)
	s.server = nil
	return err
}
