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

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/secretsencrypt"
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
			b, err := os.ReadFile(l.Token())
			if err != nil {
				return fmt.Errorf("reading this server's token: %w (is --data-dir a server's data directory?)", err)
			}
			tok, err := token.Parse(string(b))
			if err != nil {
				return fmt.Errorf("%s: %w", l.Token(), err)
			}
			kv, err := local.Datastore{Layout: l}.KV()
			if err != nil {
				return err
			}
			defer kv.Close()
			// The etcd client waits for its connection: bound it, as a
			// stopped server's socket would hold it forever.
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			data, found, err := bootstrap.Load(ctx, kv, tok.Secret)
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
			s, err := secretsencrypt.Inspect(ctx, kv, data.Encryption, localCfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(out, s); err != nil {
					return err
				}
			} else {
				state := "disabled: Secrets are stored in clear (the cluster was created without --secrets-encryption)"
				if s.Enabled {
					state = "enabled (" + secretsencrypt.Provider + ")"
				}
				file := "matches the cluster's keys"
				if !s.ConfigCurrent {
					file = "differs from the cluster's keys: restart this server to write it again"
				}
				var byKey []string
				for k, n := range s.ByKey {
					byKey = append(byKey, fmt.Sprintf("%s: %d", k, n))
				}
				sort.Strings(byKey)
				fmt.Fprintf(out, "secrets encryption: %s\nactive key:         %s\nkeys:               %s\nthis server's file: %s\nsecrets:            %d (%s)\n",
					state, orNone(s.Active), orNone(strings.Join(s.Keys, ", ")), file, s.Secrets, orNone(strings.Join(byKey, ", ")))
			}
			switch {
			case len(s.Unreadable) > 0:
				return fmt.Errorf("%d Secrets are stored by a provider hakube's keys are not for: %s", len(s.Unreadable), strings.Join(s.Unreadable, "; "))
			case !s.AllActive && s.Enabled:
				return fmt.Errorf("%d of %d Secrets are not under the active key %s", s.Secrets-s.ByKey[s.Active], s.Secrets, s.Active)
			case !s.ConfigCurrent:
				return fmt.Errorf("this server's %s differs from the cluster's keys: restart it", l.EncryptionConfig())
			}
			return nil
		},
	}
	st.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(st)
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
