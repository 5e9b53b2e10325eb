package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/internal/secretsencrypt/rekey"
	"github.com/hakube/hakube/internal/token"
)

func newSecretsEncryptCommand() *cobra.Command {
	cmd, dataDir := onServerCommand("secrets-encrypt", "Encryption of Secrets at rest (run on a server; credentials come from --data-dir)")
	var output string
	st := &cobra.Command{
		Use:   "status",
		Short: "Whether Secrets are encrypted, with which key, and whether every stored Secret is under it; exits 1 when one is not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			l := layout.New(*dataDir)
			srv, err := openServerDatastore(l)
			if err != nil {
				return err
			}
			defer srv.kv.Close()
			// The etcd client waits for its connection: bound it, as a
			// stopped server's socket would hold it forever.
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			data, _, found, err := bootstrap.Load(ctx, srv.kv, srv.secret)
			if err != nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("%w: is this server running?", err)
				}
				return err
			} else if !found {
				return errors.New("the datastore holds no bootstrap data: has this server started once?")
			}
			localCfg, err := os.ReadFile(l.EncryptionConfig())
			if errors.Is(err, os.ErrNotExist) {
				localCfg = nil
			} else if err != nil {
				return err
			}
			reports, err := secretsencrypt.ReadReports(ctx, srv.kv)
			if err != nil {
				return err
			}
			s, err := secretsencrypt.Inspect(ctx, srv.kv, data.Encryption, localCfg)
			if err != nil {
				return err
			}
			s.AddServers(data.Encryption, reports, time.Now())
			out := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(out, s); err != nil {
					return err
				}
			} else {
				state := "disabled: Secrets are stored in clear ('hakube secrets-encrypt enable' encrypts them)"
				if s.Enabled {
					state = "enabled (" + secretsencrypt.Provider + ")"
				}
				file := "matches the cluster's keys"
				if !s.ConfigCurrent {
					file = "differs from the cluster's keys (a running server writes them within 2 s: is it running?)"
				}
				var byKey []string
				for k, n := range s.ByKey {
					byKey = append(byKey, fmt.Sprintf("%s: %d", k, n))
				}
				sort.Strings(byKey)
				var servers []string
				for _, r := range s.Servers {
					servers = append(servers, r.Name+": "+r.State)
				}
				change := ""
				if s.Change != "" {
					change = fmt.Sprintf("change:             'hakube secrets-encrypt %s' began and did not finish: run it again\n", s.Change)
				}
				fmt.Fprintf(out, "secrets encryption: %s\nactive key:         %s\nkeys:               %s\n%sthis server's file: %s\nservers:            %s\nsecrets:            %d (%s)\n",
					state, orNone(s.Active), orNone(strings.Join(s.Keys, ", ")), change, file, orNone(strings.Join(servers, ", ")),
					s.Secrets, orNone(strings.Join(byKey, ", ")))
			}
			switch {
			case len(s.Unreadable) > 0:
				return fmt.Errorf("%d Secrets are stored by a provider hakube's keys are not for: %s", len(s.Unreadable), strings.Join(s.Unreadable, "; "))
			case !s.AllActive && s.Enabled:
				return fmt.Errorf("%d of %d Secrets are not under the active key %s", s.Secrets-s.ByKey[s.Active], s.Secrets, s.Active)
			case !s.ConfigCurrent:
				return fmt.Errorf("this server's %s differs from the cluster's keys: a running server writes them within 2 s; start it if it is stopped", l.EncryptionConfig())
			case !s.ServersAgree:
				return errors.New("not every running server's apiserver runs with the cluster's keys yet (they reload within a few seconds; " +
					"a change that was interrupted resumes when its command is run again)")
			case s.Change != "":
				return fmt.Errorf("'hakube secrets-encrypt %s' did not finish: run it again", s.Change)
			}
			return nil
		},
	}
	st.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(st)
	for _, c := range []struct {
		op    rekey.Op
		short string
	}{
		{rekey.RotateKeys, "Add a new key, make it active on every server, rewrite every Secret under it and retire the old key; run it again to resume an interrupted rotation"},
		{rekey.Enable, "Encrypt Secrets from now on, with a new key on every server, and rewrite the stored ones under it; no restart"},
		{rekey.Disable, "Store Secrets in clear from now on, and rewrite the stored ones in clear; no restart"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   string(c.op),
			Short: c.short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				l := layout.New(*dataDir)
				srv, err := openServerDatastore(l)
				if err != nil {
					return err
				}
				defer srv.kv.Close()
				rest, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig("admin"))
				if err != nil {
					return fmt.Errorf("this server's admin kubeconfig: %w", err)
				}
				// Every Secret is one request: client-go's default of 5 a
				// second would take 200 s for 1,000.
				rest.QPS, rest.Burst = 500, 1000
				client, err := kubernetes.NewForConfig(rest)
				if err != nil {
					return err
				}
				return rekey.Run(cmd.Context(), rekey.Config{KV: srv.kv, Secret: srv.secret, Client: client,
					Out: cmd.OutOrStdout(), Wait: 3 * time.Minute, Workers: 8}, c.op)
			},
		})
	}
	return cmd
}

// serverDatastore is this server's datastore and its token's secret.
type serverDatastore struct {
	kv     *clientv3.Client
	secret string
}

func openServerDatastore(l layout.Layout) (serverDatastore, error) {
	b, err := os.ReadFile(l.Token())
	if err != nil {
		return serverDatastore{}, fmt.Errorf("reading this server's token: %w (is --data-dir a server's data directory?)", err)
	}
	tok, err := token.Parse(string(b))
	if err != nil {
		return serverDatastore{}, fmt.Errorf("%s: %w", l.Token(), err)
	}
	kv, err := local.Datastore{Layout: l}.KV()
	if err != nil {
		return serverDatastore{}, err
	}
	return serverDatastore{kv: kv, secret: tok.Secret}, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
