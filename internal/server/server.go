package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"k8s.io/klog/v2"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/component"
	"github.com/hakube/hakube/internal/controlplane"
	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/external"
	"github.com/hakube/hakube/internal/datastore/kine"
	"github.com/hakube/hakube/internal/kubeconfig"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/supervisor"
)

// Run starts a server and blocks until ctx ends or the apiserver fails.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	tok, err := resolveToken(cfg)
	if err != nil {
		return err
	}
	nodeIP, err := resolveNodeIP(cfg.NodeIP)
	if err != nil {
		return err
	}
	advertiseIP := nodeIP
	if cfg.AdvertiseAddress != "" {
		advertiseIP = net.ParseIP(cfg.AdvertiseAddress)
	}
	nodeName, err := resolveNodeName(cfg.NodeName)
	if err != nil {
		return err
	}
	serviceIP, err := firstIP(cfg.ServiceCIDR)
	if err != nil {
		return err
	}

	serverDir := cfg.serverDir()
	tlsDir := pki.Dir(filepath.Join(serverDir, "tls"))
	credDir := filepath.Join(serverDir, "cred")
	apiPort := cfg.HTTPSPort + 1
	apiURL := "https://127.0.0.1:" + strconv.Itoa(apiPort)

	ds := newDatastore(cfg)
	boot := &clusterBootstrap{
		ds:        ds,
		tlsDir:    tlsDir,
		tok:       tok,
		tokenPath: TokenPath(cfg.DataDir),
		critical: bootstrap.Critical{
			ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR,
			ClusterDNS: cfg.ClusterDNS, ClusterDomain: cfg.ClusterDomain,
			Datastore: string(ds.Kind()),
		},
		afterShared: func() error {
			if err := controlplane.MintLeaves(controlplane.CertsConfig{
				TLSDir: tlsDir, NodeName: nodeName, NodeIP: nodeIP, AdvertiseIP: advertiseIP,
				ServiceIP: serviceIP, ClusterDomain: cfg.ClusterDomain, SANs: cfg.TLSSANs,
			}); err != nil {
				return err
			}
			for name, cert := range map[string]string{
				"controller.kubeconfig": controlplane.ControllerCert,
				"scheduler.kubeconfig":  controlplane.SchedulerCert,
				"admin.kubeconfig":      controlplane.AdminCert,
			} {
				if err := kubeconfig.Write(filepath.Join(credDir, name), kubeconfig.Config{
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
	api := controlplane.NewAPIServer(controlplane.APIServerConfig{
		TLSDir: tlsDir, StateDir: serverDir, Port: apiPort, AdvertiseIP: advertiseIP,
		ServiceCIDR: cfg.ServiceCIDR, NodePortRange: "30000-32767", ClusterDomain: cfg.ClusterDomain,
		Datastore: ds, ExtraArgs: flagArgs(cfg.KubeAPIServerArgs),
	})
	kcm := controlplane.NewControllerManager(controlplane.ControllerManagerConfig{
		TLSDir: tlsDir, Kubeconfig: filepath.Join(credDir, "controller.kubeconfig"),
		ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR, ExtraArgs: flagArgs(cfg.KubeControllerManagerArgs),
	})
	sched := controlplane.NewScheduler(controlplane.SchedulerConfig{
		Kubeconfig: filepath.Join(credDir, "scheduler.kubeconfig"), ExtraArgs: flagArgs(cfg.KubeSchedulerArgs),
	})

	mgr := component.NewManager(&dataDir{path: cfg.DataDir}, ds, boot, sup, api, kcm, sched)
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	// The controller manager and scheduler end the process through klog when
	// their leader election stops, which happens as soon as the apiserver goes
	// away during shutdown. Hold that exit until the datastore is closed; outside
	// shutdown it still ends the process, as upstream intends.
	var stopping atomic.Bool
	klog.OsExit = func(code int) {
		if stopping.Load() {
			select {}
		}
		os.Exit(code)
	}
	defer func() {
		stopping.Store(true)
		mgr.Stop()
	}()

	if cfg.WriteKubeconfig != "" {
		mode, _ := parseMode(cfg.WriteKubeconfigMode)
		if err := kubeconfig.Write(cfg.WriteKubeconfig, kubeconfig.Config{
			Server: "https://127.0.0.1:" + strconv.Itoa(cfg.HTTPSPort), CAFile: tlsDir.Cert(pki.ServerCA),
			CertFile: tlsDir.Cert(controlplane.AdminCert), KeyFile: tlsDir.Key(controlplane.AdminCert), Embed: true,
		}, mode); err != nil {
			return fmt.Errorf("--write-kubeconfig: %w", err)
		}
	}
	klog.Infof("hakube is ready: kubeconfig at %s, token at %s", cfg.WriteKubeconfig, TokenPath(cfg.DataDir))

	select {
	case <-ctx.Done():
		klog.Infof("shutting down")
		return nil
	case <-api.Exited():
		return fmt.Errorf("kube-apiserver stopped: %w", api.Err())
	}
}

func newDatastore(cfg Config) datastore.Datastore {
	switch ep := cfg.DatastoreEndpoint; {
	case external.IsEtcdURL(ep):
		return external.New(cfg.etcdConfig())
	default:
		return kine.New(kine.Config{DataDir: cfg.serverDir(), Endpoint: ep})
	}
}

// flagArgs turns key=value pass-through values into --key=value flags.
func flagArgs(kvs []string) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, "--"+strings.TrimPrefix(kv, "--"))
	}
	return out
}

func resolveNodeName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot read the hostname (%v); pass --node-name", err)
	}
	return strings.ToLower(h), nil
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
