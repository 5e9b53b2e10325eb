package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/agent"
	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/controlplane"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
)

func newCertificateCommand() *cobra.Command {
	dataDir := agent.DefaultDataDir
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "The certificates of a server or agent (run on it; they are read from --data-dir)",
	}
	cmd.PersistentFlags().StringVarP(&dataDir, "data-dir", "d", dataDir, "the local server's or agent's data directory")
	var output string
	var window time.Duration
	check := &cobra.Command{
		Use:   "check",
		Short: "Every certificate of this server or agent with its expiry; exits 1 when one expires within the window or has expired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if window < 0 {
				return fmt.Errorf("--window %s: give a duration of 0 or more, like 2880h (120 days)", window)
			}
			l := layout.New(dataDir)
			certs, err := pki.Check(time.Now(), window, l.TLS(), l.AgentTLS())
			if err != nil {
				return err
			}
			if len(certs) == 0 {
				return fmt.Errorf("no certificate in %s or %s: is --data-dir the data directory of a server or agent?", l.TLS(), l.AgentTLS())
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(out, certs); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "FILE\tSUBJECT\tCA\tEXPIRES\tLEFT\tSTATE")
				for _, c := range certs {
					fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\n", c.File, c.Subject, c.CA, c.NotAfter.Format(time.RFC3339),
						days(time.Duration(c.SecondsLeft)*time.Second), c.State)
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			var due, expired []string
			for _, c := range certs {
				switch c.State {
				case pki.StateDue:
					due = append(due, c.Name)
				case pki.StateExpired:
					expired = append(expired, c.Name)
				}
			}
			if len(due)+len(expired) == 0 {
				return nil
			}
			var b strings.Builder
			if len(expired) > 0 {
				fmt.Fprintf(&b, "%d certificates have expired (%s); ", len(expired), strings.Join(expired, ", "))
			}
			if len(due) > 0 {
				fmt.Fprintf(&b, "%d certificates expire within %s (%s); ", len(due), days(window), strings.Join(due, ", "))
			}
			b.WriteString("a running server or agent renews its leaf certificates by itself when a third of their life is left, " +
				"and 'hakube certificate rotate' renews them now (a CA near its end: 'hakube certificate rotate-ca')")
			return fmt.Errorf("%s", b.String())
		},
	}
	check.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	check.Flags().DurationVar(&window, "window", renewWindow(), "how close to its expiry a certificate fails the check")
	cmd.AddCommand(check, newCertificateRotateCommand(&dataDir), newRotateCACommand(&dataDir))
	return cmd
}

// renewWindow is when a running server or agent renews a leaf (120 days of a
// year; a third of HAKUBE_CERT_VALIDITY's), the check's default.
func renewWindow() time.Duration {
	if lt, err := pki.LeafLifetimes(); err == nil {
		return lt.Window
	}
	return pki.RenewWindow
}

// nodeServices are the services whose certificates a node holds; a server
// issues them, so the node asks for all four at once.
var nodeServices = []string{"kubelet", "kube-proxy", "flannel"}

// serverServices names each service's leaf certificates on a server.
func serverServices() map[string][]string {
	return map[string][]string{
		// The supervisor serves with the apiserver's certificate and
		// authenticates to it with the auth proxy's.
		"kube-apiserver":          {controlplane.ServingCert, controlplane.KubeletClient, controlplane.AuthProxyCert},
		"admin":                   {controlplane.AdminCert},
		"kube-controller-manager": {controlplane.ControllerCert},
		"kube-scheduler":          {controlplane.SchedulerCert},
		"etcd":                    {etcd.ServerCert, etcd.PeerCert, etcd.ClientCert},
		"dqlite":                  {dqlite.PeerCert},
	}
}

func newCertificateRotateCommand(dataDir *string) *cobra.Command {
	var services []string
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Renew this server's or agent's leaf certificates now, while it runs (their keys are kept)",
		Long: "Renews the leaf certificates of this server (signed by the cluster CAs it holds) and of its node (issued " +
			"by a server, so the running node asks for them and this command waits for it). Running daemons read the " +
			"new files at their next connection; nothing restarts. A server or agent also renews a leaf by itself when " +
			"a third of its life is left (120 days of a year).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l := layout.New(*dataDir)
			known := serverServices()
			pick := map[string]bool{}
			node := len(services) == 0
			for _, s := range services {
				switch names, ok := known[s]; {
				case ok:
					for _, n := range names {
						pick[n] = true
					}
				case slices.Contains(nodeServices, s):
					node = true
				default:
					var all []string
					for k := range known {
						all = append(all, k)
					}
					all = append(all, nodeServices...)
					slices.Sort(all)
					return fmt.Errorf("--service %q is not a service with certificates; give one of %s", s, strings.Join(all, ", "))
				}
			}
			isServer := fsutil.Exists(l.TLS().Key(pki.ServerCA))
			isNode := fsutil.Exists(l.AgentTLS().Cert(credentials.KubeletClient))
			if !isServer && !isNode {
				return fmt.Errorf("no certificates in %s or %s: is --data-dir the data directory of a server or agent?", l.TLS(), l.AgentTLS())
			}
			out := cmd.OutOrStdout()
			if isServer && (len(services) == 0 || len(pick) > 0) {
				// No --service: every leaf.
				all := len(pick) == 0
				renewed, err := l.TLS().RenewLeaves(time.Now(), renewWindow(), func(name string) bool { return all || pick[name] })
				if err != nil {
					return err
				}
				if len(renewed) == 0 && len(pick) > 0 {
					return fmt.Errorf("this server has no certificate of %s (etcd's exist on etcd only, dqlite's on Dqlite only)", strings.Join(services, ", "))
				}
				for _, c := range renewed {
					fmt.Fprintf(out, "renewed %s (%s), valid until %s\n", c.File, c.Subject, c.NotAfter.Format(time.RFC3339))
				}
			} else if len(pick) > 0 {
				return fmt.Errorf("%s holds no server certificates: --service %s is a server's", *dataDir, strings.Join(services, ", "))
			}
			if !node {
				return nil
			}
			if !isNode {
				if len(services) > 0 {
					return fmt.Errorf("%s holds no node certificates (a server started with --disable-agent is no node)", *dataDir)
				}
				return nil
			}
			return rotateNode(cmd.Context(), out, l)
		},
	}
	cmd.Flags().StringSliceVar(&services, "service", nil, "renew only these services' certificates (repeat or comma-separate): "+
		"kube-apiserver, admin, kube-controller-manager, kube-scheduler, etcd, dqlite on a server; kubelet, kube-proxy, flannel on a node "+
		"(a node renews its four together)")
	return cmd
}

// rotateNode asks the running node to renew its certificates and waits for it.
func rotateNode(ctx context.Context, out io.Writer, l layout.Layout) error {
	req := l.RenewRequest()
	if err := fsutil.WriteFile(req, nil, 0o600); err != nil {
		return err
	}
	fmt.Fprintln(out, "asked the node to renew its certificates; waiting for it")
	const wait = 15 * time.Second
	deadline := time.Now().Add(wait)
	for fsutil.Exists(req) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the node did not renew its certificates within %s: hakube is not running here, or cannot reach a server "+
				"(its log says which); the request stays, and the node renews them when it starts or reaches a server", wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	certs, err := pki.Check(time.Now(), renewWindow(), l.AgentTLS())
	if err != nil {
		return err
	}
	for _, c := range certs {
		if !c.CA {
			fmt.Fprintf(out, "renewed %s (%s), valid until %s\n", c.File, c.Subject, c.NotAfter.Format(time.RFC3339))
		}
	}
	return nil
}

// days is d in whole days, hours when under two days, seconds when under
// two hours (short-lived certificates).
func days(d time.Duration) string {
	if d > -2*time.Hour && d < 2*time.Hour {
		return d.Round(time.Second).String()
	}
	if d > -48*time.Hour && d < 48*time.Hour {
		return d.Round(time.Hour).String()
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
