package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/component"
	"github.com/hakube/hakube/internal/controlplane"
	"github.com/hakube/hakube/internal/datadir"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/datastore/external"
	"github.com/hakube/hakube/internal/datastore/kine"
	"github.com/hakube/hakube/internal/identity"
	"github.com/hakube/hakube/internal/join"
	"github.com/hakube/hakube/internal/kubeconfig"
	"github.com/hakube/hakube/internal/manifests"
	"github.com/hakube/hakube/internal/metrics"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/runner"
	"github.com/hakube/hakube/internal/snapshot"
	"github.com/hakube/hakube/internal/supervisor"
)

// Run starts a server and blocks until ctx ends or a component fails; it
// returns runner.ErrRestart when the server must restart in place.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	lt, _ := pki.LeafLifetimes() // validated
	kubeconfig.FollowRenewals(lt.Window)
	tok, err := resolveToken(cfg)
	if err != nil {
		return err
	}
	agentTok, err := resolveAgentToken(cfg)
	if err != nil {
		return err
	}
	id, err := identity.Resolve(cfg.NodeName, cfg.NodeIP, cfg.AdvertiseAddress, cfg.layout(), tok)
	if err != nil {
		return err
	}
	serviceIP, err := firstIP(cfg.ServiceCIDR)
	if err != nil {
		return err
	}

	l := id.Layout
	tlsDir := l.TLS()
	apiPort := cfg.HTTPSPort + 1
	apiURL := "https://127.0.0.1:" + strconv.Itoa(apiPort)

	var reset *clusterReset
	if cfg.ClusterReset {
		if reset, err = planReset(cfg, id.Token, cfg.etcdMember(id)); err != nil {
			return err
		}
	}
	ds, mig, err := newDatastore(cfg, id, reset)
	if err != nil {
		return err
	}
	critical := cfg.critical(ds.Kind())
	boot := &clusterBootstrap{
		ds:               ds,
		tlsDir:           tlsDir,
		tok:              id.Token,
		critical:         critical,
		encryptionConfig: l.EncryptionConfig(), encryptionOnCreate: cfg.SecretsEncryption, server: id.Name,
		agentSecret: agentTok.Secret, agentCAHash: agentTok.CAHash, agentTokenPath: l.AgentToken(),
		afterShared: func() error {
			if err := controlplane.MintLeaves(controlplane.CertsConfig{
				TLSDir: tlsDir, NodeName: id.Name, NodeIP: id.IP, AdvertiseIP: id.AdvertiseIP,
				ServiceIP: serviceIP, ClusterDomain: cfg.ClusterDomain, SANs: cfg.TLSSANs,
			}); err != nil {
				return err
			}
			for name, cert := range map[string]string{
				"controller": controlplane.ControllerCert,
				"scheduler":  controlplane.SchedulerCert,
				"admin":      controlplane.AdminCert,
			} {
				if err := kubeconfig.Write(l.Kubeconfig(name), kubeconfig.Config{
					Server: apiURL, CAFile: tlsDir.Cert(pki.ServerCA),
					CertFile: tlsDir.Cert(cert), KeyFile: tlsDir.Key(cert),
				}, 0o600); err != nil {
					return err
				}
			}
			return nil
		},
	}
	sup := supervisor.New(supervisor.Config{
		BindAddress:  cfg.BindAddress,
		Port:         cfg.HTTPSPort,
		ServerCAFile: tlsDir.Cert(pki.ServerCA),
		CertFile:     tlsDir.Cert(controlplane.ServingCert), KeyFile: tlsDir.Key(controlplane.ServingCert),
		ClientCAFile:  tlsDir.Cert(pki.ClientCA),
		ProxyCertFile: tlsDir.Cert(controlplane.AuthProxyCert), ProxyKeyFile: tlsDir.Key(controlplane.AuthProxyCert),
		APIServerURL: apiURL,
	})
	apiCfg := controlplane.APIServerConfig{
		TLSDir: tlsDir, CertDir: l.APIServerCertDir(), Port: apiPort, AdvertisePort: cfg.HTTPSPort, AdvertiseIP: id.AdvertiseIP,
		ServiceCIDR: cfg.ServiceCIDR, NodePortRange: "30000-32767", ClusterDomain: cfg.ClusterDomain,
		Datastore: ds, EncryptionConfig: l.EncryptionConfig(), ExtraArgs: flagArgs(cfg.KubeAPIServerArgs),
	}
	api := controlplane.NewAPIServer(apiCfg)
	kcm := controlplane.NewControllerManager(controlplane.ControllerManagerConfig{
		TLSDir: tlsDir, Kubeconfig: l.Kubeconfig("controller"),
		ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR, SigningDuration: lt.Validity, ExtraArgs: flagArgs(cfg.KubeControllerManagerArgs),
	})
	sched := controlplane.NewScheduler(controlplane.SchedulerConfig{
		Kubeconfig: l.Kubeconfig("scheduler"), ExtraArgs: flagArgs(cfg.KubeSchedulerArgs),
	})

	joinSrv := &join.Server{
		CAFile: tlsDir.Cert(pki.ServerCA),
		Bootstrap: func(ctx context.Context) (bootstrap.Data, error) {
			cli, err := datastore.Client(ds.Endpoint())
			if err != nil {
				return bootstrap.Data{}, err
			}
			defer cli.Close()
			d, _, _, err := bootstrap.Load(ctx, cli, id.Token.Secret)
			return d, err
		},
	}
	joinSrv.Members = func(ctx context.Context) ([]join.Member, error) {
		m, ok := embedded(ds).(datastore.Membership)
		if !ok {
			return nil, nil
		}
		ms, err := m.Members(ctx)
		return joinMembers(ms), err
	}
	_, serviceNet, _ := net.ParseCIDR(cfg.ServiceCIDR)
	joinSrv.Node = (&nodeIssuer{tls: tlsDir, kubeconfig: l.Kubeconfig("admin"), clusterDomain: cfg.ClusterDomain, serviceNet: serviceNet,
		cluster: join.NodeCluster{ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR, ClusterDNS: cfg.ClusterDNS, ClusterDomain: cfg.ClusterDomain},
		sans:    cfg.TLSSANs, self: id.Name, selfIP: id.IP}).issue
	joinSrv.SetToken(id.Token.Secret)
	joinSrv.Register(sup.Handle)
	held := serverToken{layout: l, join: joinSrv}
	boot.token, boot.onAgentSecret = held, joinSrv.SetAgentSecret

	dirs := []string{l.ServerDir()}
	if !cfg.DisableAgent {
		dirs = append(dirs, l.AgentDir())
	}
	renewer := &certRenewer{tls: tlsDir}
	if cfg.WriteKubeconfig != "" {
		// It embeds the admin certificate, so it is written again after a renewal.
		renewer.adminCert, renewer.kubeconfig = tlsDir.Cert(controlplane.AdminCert), cfg.WriteKubeconfig
		renewer.writeKubeconfig = func() error {
			mode, _ := parseMode(cfg.WriteKubeconfigMode)
			return kubeconfig.Write(cfg.WriteKubeconfig, kubeconfig.Config{
				Server: "https://127.0.0.1:" + strconv.Itoa(cfg.HTTPSPort), CAFile: tlsDir.Cert(pki.ServerCA),
				CertFile: tlsDir.Cert(controlplane.AdminCert), KeyFile: tlsDir.Key(controlplane.AdminCert), Embed: true,
			}, mode)
		}
	}
	cas := &caRollout{tls: tlsDir, server: id.Name, token: held, restart: make(chan error, 1),
		members: func(ctx context.Context) ([]datastore.Member, error) {
			if m, ok := embedded(ds).(datastore.Membership); ok {
				return m.Members(ctx)
			}
			return nil, nil
		}}
	// The CAs the datastore's member starts with: a server stopped while a
	// rotation began mints its peer certificates from its old files, and
	// restarts at its turn once the cluster bootstrap wrote the new ones.
	recordCAs := step("CAs the datastore starts with", cas.record)
	components := []component.Component{&datadir.DataDir{Layout: l, Dirs: dirs}}
	switch joining, isJoining := ds.(*joiningDatastore); {
	case isJoining:
		client, err := join.NewClient(cfg.Server, id.Token)
		if err != nil {
			return err
		}
		components = append(components, &joinCluster{client: client, layout: l, nodeName: id.Name, critical: critical, target: joining}, recordCAs, ds)
	case ds.Kind().Clustered():
		components = append(components, step("cluster CAs", func(context.Context) error { return tlsDir.EnsureCAs() }), recordCAs, ds)
	default:
		components = append(components, recordCAs, ds)
	}
	if mig != nil {
		components = append(components, step("migration from "+string(mig.kind), func(ctx context.Context) error { return mig.run(ctx, ds) }))
	}
	components = append(components, boot, renewer, sup, api, kcm, sched,
		&encryptionKeys{ds: ds, cas: cas, token: held, server: id.Name, path: l.EncryptionConfig(), forgetOthers: reset != nil || mig != nil},
		step("built-in manifests", func(context.Context) error { return writeBuiltinManifests(l.Manifests(), cfg) }),
		manifests.New(manifests.Config{Dir: l.Manifests(), Kubeconfig: l.Kubeconfig("admin")}))
	if ds.Kind().Clustered() {
		hosts := []string{"127.0.0.1"}
		if cfg.ExposeMetrics {
			hosts = append(hosts, id.IP.String())
		}
		components = append(components, metrics.New(metrics.Config{Hosts: hosts, Port: metrics.DefaultPort, Pprof: cfg.EnablePprof,
			Collectors: func() []prometheus.Collector {
				cs := append(sup.Collectors(), metrics.Certificates(l.TLS(), l.AgentTLS()))
				if d, ok := embedded(ds).(interface{ Collector() prometheus.Collector }); ok {
					cs = append(cs, d.Collector())
				}
				return cs
			}}))
		if !cfg.DisableSnapshots {
			components = append(components, snapshot.NewScheduler(cfg.snapshotConfig()))
		}
	}
	if !cfg.DisableAgent {
		// The server's node joins its own supervisor with the token, as a
		// remote agent does.
		local := "https://127.0.0.1:" + strconv.Itoa(cfg.HTTPSPort)
		node, err := agent.Node{NodeConfig: cfg.Node, ID: id, JoinURL: local, APIServer: local}.Components()
		if err != nil {
			return err
		}
		components = append(components, &controlPlaneLabel{node: id.Name, kubeconfig: l.Kubeconfig("admin")})
		components = append(components, node...)
	}
	return runner.Run(ctx, runner.Config{
		Name:       "server",
		Components: components,
		// A datastore out of space recovers before the components start again.
		RestartEarly: func() bool {
			s, ok := embedded(ds).(datastore.NoSpaceReporter)
			return ok && s.NoSpace()
		},
		OnReady: func() error {
			if renewer.writeKubeconfig != nil {
				if err := renewer.writeKubeconfig(); err != nil {
					return fmt.Errorf("--write-kubeconfig: %w", err)
				}
			}
			klog.Infof("hakube is ready: kubeconfig at %s, token at %s", cfg.WriteKubeconfig, l.Token())
			if reset != nil {
				return reset.done(id.AdvertiseIP, cfg.HTTPSPort)
			}
			if err := os.Remove(l.ResetMarker()); err == nil {
				klog.Infof("started without --cluster-reset: a later reset is allowed again")
			}
			return nil
		},
	})
}

// newDatastore picks the datastore, and the migration that must fill it first
// when this server's data is in a datastore of another kind.
func newDatastore(cfg Config, id identity.Identity, reset *clusterReset) (datastore.Datastore, *migration, error) {
	l := id.Layout
	dqliteCfg := dqlite.ComponentConfig{Dir: l.Dqlite(), Socket: l.DqliteSocket(), NodeName: id.Name, NodeIP: id.IP, TLSDir: l.TLS(), Bootstrap: cfg.ClusterInit}
	etcdCfg := cfg.etcdMember(id)
	kineCfg := kine.Config{Socket: l.KineSocket(), DBPath: l.SQLite()}
	switch ep := cfg.DatastoreEndpoint; {
	case external.IsEtcdURL(ep):
		return external.New(cfg.etcdConfig()), nil, nil
	case ep != "":
		kineCfg.Endpoint = ep
		return kine.New(kineCfg), nil, nil
	case cfg.Server != "":
		return &joiningDatastore{nodeIP: id.IP, dqliteCfg: dqliteCfg, etcd: etcd.New(etcdCfg)}, nil, nil
	case reset != nil:
		// A restored member is alone already; one keeping its data is made so.
		etcdCfg.ForceNewCluster, dqliteCfg.Reset = reset.from == "", reset.from == ""
		if reset.dqlite != nil {
			dqliteCfg.RestoreFrom = reset.dqlite.Path()
		}
		if reset.kind == datastore.Dqlite {
			return dqlite.New(dqliteCfg), nil, nil
		}
		return etcd.New(etcdCfg), nil, nil
	}
	target, source, err := planDatastore(cfg, localKinds(l))
	if err != nil {
		return nil, nil, err
	}
	open := func(k datastore.Kind) datastore.Datastore {
		switch k {
		case datastore.Etcd:
			return etcd.New(etcdCfg)
		case datastore.Dqlite:
			return dqlite.New(dqliteCfg)
		}
		return kine.New(kineCfg)
	}
	ds := open(target)
	if source == "" {
		return ds, nil, nil
	}
	m := &migration{kind: source, from: open(source), files: dataPaths(l, source)}
	switch source {
	case datastore.Etcd:
		m.self = etcd.MemberName(l.Etcd())
	case datastore.Dqlite:
		m.self = id.Name
	}
	return ds, m, nil
}

// step is a component that does one thing at its place in the start order.
func step(name string, fn func(context.Context) error) component.Component {
	return &stepComponent{name: name, fn: fn}
}

type stepComponent struct {
	name string
	fn   func(context.Context) error
}

func (s *stepComponent) Name() string                    { return s.name }
func (s *stepComponent) Init(context.Context) error      { return nil }
func (s *stepComponent) Start(ctx context.Context) error { return s.fn(ctx) }
func (s *stepComponent) Stop() error                     { return nil }

// joinMembers is what a joiner learns of the members.
func joinMembers(ms []datastore.Member) []join.Member {
	out := make([]join.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, join.Member{Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.Learner})
	}
	return out
}

// flagArgs turns key=value pass-through values into --key=value flags.
func flagArgs(kvs []string) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, "--"+strings.TrimPrefix(kv, "--"))
	}
	return out
}

func firstIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	ip := append(net.IP(nil), n.IP.To16()...)
	ip[len(ip)-1]++
	return ip, nil
}
