package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hakube/hakube/internal/bootstrap"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/internal/token"
)

func newTokenCommand() *cobra.Command {
	cmd, dataDir := onServerCommand("token", "The cluster's join token (run on a server; credentials come from --data-dir)")
	var oldToken, newToken string
	var wait time.Duration
	rotate := &cobra.Command{
		Use:   "rotate --new-token NEW",
		Short: "Replace the cluster's token: joins need the new one from now on; servers and nodes that joined keep working and restarting",
		Long: `Replace the cluster's server token with --new-token. The cluster's bootstrap data is stored under
the new token, and what the old one opens names the new one. Every running server takes the new token
within seconds (its join endpoint refuses the old one, and it writes the new one to <data-dir>/server/token);
a stopped server takes it at its next start, even when its configuration still gives the old one. Nodes
that joined ask for their certificates with their own certificate, so they need no token until they join
again. Give the new token to new servers and agents, and put it in the configuration of the existing ones.
The agent token (--agent-token) is not changed. Run it again to finish an interrupted rotation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return rotateToken(cmd.Context(), layout.New(*dataDir), oldToken, newToken, wait, cmd.OutOrStdout())
		},
	}
	rotate.Flags().StringVar(&newToken, "new-token", "", "the token that replaces the cluster's (required; a long random secret)")
	rotate.Flags().StringVar(&oldToken, "token", "", "the cluster's current token (default: the one in --data-dir)")
	rotate.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for every running server to take the new token")
	cmd.AddCommand(rotate)
	return cmd
}

func rotateToken(ctx context.Context, l layout.Layout, oldGiven, newGiven string, wait time.Duration, out io.Writer) error {
	if newGiven == "" {
		return errors.New("--new-token is required: the token that replaces the cluster's, e.g. from 'openssl rand -hex 32'")
	}
	newTok, err := token.Parse(newGiven)
	if err != nil {
		return fmt.Errorf("malformed --new-token: %w", err)
	}
	ca, err := os.ReadFile(l.TLS().Cert(pki.ServerCA))
	if err != nil {
		return fmt.Errorf("reading the cluster's CA: %w (is --data-dir a server's data directory?)", err)
	}
	if newTok.CAHash != "" && newTok.CAHash != token.HashCA(ca) {
		return errors.New("--new-token's CA hash is not this cluster's: give the secret alone, or pin it to this cluster's CA")
	}
	srv, err := openServerDatastore(l)
	if err != nil {
		return err
	}
	defer srv.kv.Close()
	old := srv.secret
	if oldGiven != "" {
		t, err := token.Parse(oldGiven)
		if err != nil {
			return fmt.Errorf("malformed --token: %w", err)
		}
		old = t.Secret
	}
	// The etcd client waits for its connection: a stopped server's would
	// hold it forever.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, current, _, err := bootstrap.Load(lctx, srv.kv, old)
	if err != nil {
		if lctx.Err() != nil {
			err = fmt.Errorf("%w: is this server running?", err)
		}
		return err
	}
	switch {
	case current == newTok.Secret:
		// Run again after a rotation, here or on another server.
		if err := bootstrap.Finish(lctx, srv.kv, current); err != nil {
			return err
		}
		fmt.Fprintln(out, "the cluster's token is the new one already")
	case current != old:
		return fmt.Errorf("the token given was replaced already: rotate from the cluster's current token (in %s on a server that runs)", l.Token())
	case data.AgentSecret == newTok.Secret:
		return errors.New("--new-token is the cluster's agent token: servers need a secret agents do not hold")
	default:
		if err := bootstrap.Rotate(lctx, srv.kv, old, newTok.Secret); err != nil {
			return err
		}
		fmt.Fprintln(out, "stored the cluster's bootstrap data under the new token: each server refuses the old one once it takes the new one")
	}
	// Each server, this one included, writes it to its own token file as it
	// takes it (waited for below).
	full := token.Token{User: token.ServerUser, Secret: newTok.Secret}.WithCA(ca)
	took, down, err := waitForToken(ctx, srv, bootstrap.Key(newTok.Secret), wait, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "servers that took the new token: %s\n", orNone(strings.Join(took, ", ")))
	if len(down) > 0 {
		fmt.Fprintf(out, "servers down, which take it at their next start: %s\n", strings.Join(down, ", "))
	}
	fmt.Fprintf(out, "nodes that joined keep working: they renew with their own certificates.\n"+
		"joins need the new token from now on; give it to new servers and agents, and in the configuration of existing ones:\n%s\n", full)
	return nil
}

// waitForToken waits until every running server reports holding the token
// whose bootstrap data is at key (secretsencrypt.Report.Token); a server
// that has not reported for DownAfter is down.
func waitForToken(ctx context.Context, srv serverDatastore, key string, wait time.Duration, out io.Writer) (took, down []string, err error) {
	began := time.Now()
	var said time.Time
	for {
		took, down = nil, nil
		var behind []string
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		reports, err := secretsencrypt.ReadReports(rctx, srv.kv)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		for _, r := range reports {
			switch age := time.Since(r.Updated); {
			case age > secretsencrypt.GoneAfter:
			case r.Token == key:
				took = append(took, r.Server)
			case age > secretsencrypt.DownAfter:
				down = append(down, fmt.Sprintf("%s (last seen %s ago)", r.Server, age.Round(time.Second)))
			default:
				behind = append(behind, r.Server)
			}
		}
		if len(behind) == 0 {
			return took, down, nil
		}
		if time.Since(began) > wait {
			return nil, nil, fmt.Errorf("%s did not take the new token within %s: the rotation is stored, and they take it when they "+
				"read the cluster's data; check that they run, and run this command again to wait for them", strings.Join(behind, ", "), wait)
		}
		if time.Since(said) > 10*time.Second {
			fmt.Fprintf(out, "waiting for %s to take the new token (%s so far)\n", strings.Join(behind, ", "), time.Since(began).Round(time.Second))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
