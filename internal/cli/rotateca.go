package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/grpclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hakube/hakube/internal/agent/credentials"
	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/fsutil"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/internal/server"
)

func newRotateCACommand(dataDir *string) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-ca",
		Short: "Replace the cluster's CAs with new ones while it runs (run on a server): for a CA compromised or near its end",
		Long: `Replace every CA of the cluster (server, client, request-header, etcd server and peer) with a new
one, cross-signed by the CA it replaces, in two steps that each reach every server and node before the
next begins:

  1. Servers sign with the new CAs and trust both. Each server writes the new CA bundles at once, then
     restarts in place, one server at a time (a restart mints its certificates from the new CAs). Then
     each node gets certificates of the new CAs and restarts in place.
  2. The old CAs are no longer trusted: servers, then nodes, restart in place again.

Every certificate of a new CA carries its cross-signature, so what still trusts only the old CA (a node
not yet restarted, a pod that read its service-account CA at its start) keeps verifying it. The
service-account signing key is kept. The server CA's pin in full join tokens changes: the command prints
the new tokens. A server or node that is down holds the rotation up (start it, or remove it); a node
stopped for the whole rotation joins again with a token. Safe to run again after an interruption: it goes
on from the step the cluster is in.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return rotateCA(cmd.Context(), layout.New(*dataDir), wait, cmd.OutOrStdout())
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 15*time.Minute, "how long to wait for each step to reach every server and node")
	return cmd
}

// caRotation runs 'hakube certificate rotate-ca' from a server's data dir.
type caRotation struct {
	l    layout.Layout
	wait time.Duration
	out  io.Writer
}

func rotateCA(ctx context.Context, l layout.Layout, wait time.Duration, out io.Writer) error {
	if !fsutil.Exists(l.TLS().Key(pki.ServerCA)) {
		return fmt.Errorf("no cluster CA in %s: run this on a server, with its --data-dir", l.TLS())
	}
	// The datastore client's reconnections while this server restarts are
	// expected: errors only.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
	r := caRotation{l: l, wait: wait, out: out}
	began := time.Now()
	data, err := r.load(ctx)
	if err != nil {
		return err
	}
	// A step stored before (an interrupted run) reaches everyone first.
	if err := r.rollOut(ctx, data.Files, "the cluster's current CAs"); err != nil {
		return err
	}
	_, rotating, err := pki.FinishShared(data.Files)
	if err != nil {
		return err
	}
	if !rotating && !data.CAFinishing {
		fmt.Fprintln(out, "step 1 of 2: new CAs, cross-signed by the old ones; servers sign with them and trust both")
		if data, err = r.store(ctx, data.Files, func(d *bootstrap.Data) error {
			d.Files, err = pki.RotateShared(d.Files)
			return err
		}); err != nil {
			return err
		}
		if err := r.rollOut(ctx, data.Files, "step 1"); err != nil {
			return err
		}
		rotating = true
	}
	if rotating {
		fmt.Fprintln(out, "step 2 of 2: the old CAs are no longer trusted")
		if data, err = r.store(ctx, data.Files, func(d *bootstrap.Data) error {
			d.Files, _, err = pki.FinishShared(d.Files)
			d.CAFinishing = true
			return err
		}); err != nil {
			return err
		}
		if err := r.rollOut(ctx, data.Files, "step 2"); err != nil {
			return err
		}
	}
	if _, err := r.store(ctx, data.Files, func(d *bootstrap.Data) error {
		d.CAFinishing = false
		return nil
	}); err != nil {
		return err
	}
	tok, err := os.ReadFile(l.Token())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "the cluster's CAs are rotated (%s): every running server and node trusts the new CAs only.\n"+
		"joins with a full token need the new one (its CA pin changed):\n%s", time.Since(began).Round(time.Second), tok)
	if agentTok, err := os.ReadFile(l.AgentToken()); err == nil {
		fmt.Fprintf(out, "and the agent token, pinned to the new CA:\n%s", agentTok)
	}
	return nil
}

// load reads the cluster's bootstrap data.
func (r caRotation) load(ctx context.Context) (bootstrap.Data, error) {
	var data bootstrap.Data
	err := r.withKV(ctx, func(ctx context.Context, s serverDatastore) (err error) {
		data, _, _, err = bootstrap.Load(ctx, s.kv, s.secret)
		return err
	})
	return data, err
}

// store changes the bootstrap data, if its CAs are still base.
func (r caRotation) store(ctx context.Context, base map[string][]byte, change func(*bootstrap.Data) error) (bootstrap.Data, error) {
	var data bootstrap.Data
	err := r.withKV(ctx, func(ctx context.Context, s serverDatastore) (err error) {
		data, err = bootstrap.Update(ctx, s.kv, s.secret, func(d *bootstrap.Data) error {
			if pki.SharedTrust(d.Files) != pki.SharedTrust(base) {
				return errors.New("the cluster's CAs changed meanwhile (another 'hakube certificate rotate-ca'?): run this command again")
			}
			return change(d)
		})
		return err
	})
	return data, err
}

// withKV runs f with a new client of this server's datastore: its
// certificates change as the server restarts during a rotation.
func (r caRotation) withKV(ctx context.Context, f func(context.Context, serverDatastore) error) error {
	srv, err := openServerDatastore(r.l)
	if err != nil {
		return err
	}
	defer srv.kv.Close()
	// The etcd client waits for its connection: a stopped server's would
	// hold it forever.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := f(ctx, srv); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: is this server running?", err)
		}
		return err
	}
	return nil
}

// rollOut waits until every server runs with the CA bundles in files,
// then tells every node (an annotation on its Node) and waits until each
// runs with them. One that is down holds the rotation up: once the old CAs
// are no longer trusted, its certificates would be refused.
func (r caRotation) rollOut(ctx context.Context, files map[string][]byte, what string) error {
	want := pki.SharedTrust(files)
	nodeWant := pki.NodeTrust(files[pki.ServerCA+".crt"], files[pki.ClientCA+".crt"])
	began := time.Now()
	var said time.Time
	progress := func(waiting string) error {
		if time.Since(began) > r.wait {
			return fmt.Errorf("%s did not reach %s within %s: check that they run (a node that is gone: 'kubectl delete node NAME'), "+
				"then run this command again to go on", what, waiting, r.wait)
		}
		if time.Since(said) > 10*time.Second {
			fmt.Fprintf(r.out, "%s: waiting for %s (%s so far)\n", what, waiting, time.Since(began).Round(time.Second))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
			return nil
		}
	}
	// Servers first: a node asks any server for the new CAs.
	for _, of := range []struct {
		what   string
		behind func() ([]string, error)
	}{
		{"servers", func() ([]string, error) { return r.serversBehind(ctx, want) }},
		{"nodes", func() ([]string, error) { return r.nodesBehind(ctx, nodeWant) }},
	} {
		for {
			behind, err := of.behind()
			if err != nil {
				behind = []string{"an answer (" + err.Error() + ")"}
			}
			if len(behind) == 0 {
				break
			}
			if err := progress(of.what + " " + strings.Join(behind, ", ")); err != nil {
				return err
			}
		}
	}
	return nil
}

// serversBehind lists the running servers that do not run with the CAs
// want yet, the one restarting first.
func (r caRotation) serversBehind(ctx context.Context, want string) ([]string, error) {
	var behind []string
	err := r.withKV(ctx, func(ctx context.Context, s serverDatastore) error {
		reports, err := secretsencrypt.ReadReports(ctx, s.kv)
		if err != nil {
			return err
		}
		turn, _, err := server.ReadCATurn(ctx, s.kv)
		if err != nil {
			return err
		}
		for _, rep := range reports {
			age := time.Since(rep.Updated)
			switch {
			case rep.CA == want || age > secretsencrypt.GoneAfter:
			case rep.Server == turn:
				behind = slices.Insert(behind, 0, rep.Server+" (restarting)")
			case age > secretsencrypt.DownAfter:
				// It would take the CAs at its start; but a step stored
				// while it is down could leave it unable to reach its
				// datastore peers, which then trust the new CAs alone.
				behind = append(behind, fmt.Sprintf("%s (down for %s: start it, or remove it from the datastore with 'hakube etcd member remove')",
					rep.Server, age.Round(time.Second)))
			default:
				behind = append(behind, rep.Server)
			}
		}
		return nil
	})
	return behind, err
}

// nodesBehind asks every node for the CAs want and lists those that do not
// run with them yet.
func (r caRotation) nodesBehind(ctx context.Context, want string) ([]string, error) {
	client, err := adminClient(r.l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var behind []string
	for _, n := range nodes.Items {
		if n.Annotations[credentials.WantedTrustAnnotation] != want {
			if err := credentials.Annotate(ctx, client, n.Name, credentials.WantedTrustAnnotation, want); err != nil {
				return nil, err
			}
		}
		if n.Annotations[credentials.TrustAnnotation] == want {
			continue
		}
		if !nodeReady(n) {
			behind = append(behind, n.Name+" (NotReady)")
		} else {
			behind = append(behind, n.Name)
		}
	}
	return behind, nil
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// adminClient is a client of this server's apiserver as admin, with the
// kubeconfig's files read now: a rotation rewrites them as the server
// restarts, and client-go keeps a transport per file name.
func adminClient(l layout.Layout) (kubernetes.Interface, error) {
	rest, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig("admin"))
	if err != nil {
		return nil, fmt.Errorf("this server's admin kubeconfig: %w", err)
	}
	t := &rest.TLSClientConfig
	for _, f := range []struct {
		file *string
		data *[]byte
	}{{&t.CAFile, &t.CAData}, {&t.CertFile, &t.CertData}, {&t.KeyFile, &t.KeyData}} {
		if *f.file == "" {
			continue
		}
		if *f.data, err = os.ReadFile(*f.file); err != nil {
			return nil, err
		}
		*f.file = ""
	}
	return kubernetes.NewForConfig(rest)
}
