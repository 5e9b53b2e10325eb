package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/grpclog"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/dqlite"
	"github.com/hakube/hakube/internal/datastore/etcd"
	"github.com/hakube/hakube/internal/pki"
	"github.com/hakube/hakube/internal/server"
)

func newEtcdCommand() *cobra.Command {
	dataDir := server.NewConfig().DataDir
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Manage the embedded etcd or Dqlite cluster (run on a server; credentials come from --data-dir)",
		PersistentPreRun: func(*cobra.Command, []string) {
			// gRPC's connection retries are noise here; failures come back as errors.
			grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
		},
	}
	cmd.PersistentFlags().StringVarP(&dataDir, "data-dir", "d", dataDir, "the local server's data directory")
	connect := func() (*clientv3.Client, error) {
		tlsDir := pki.Dir(filepath.Join(dataDir, "server", "tls"))
		ep := etcd.LocalEndpoint(tlsDir, 0)
		if _, err := os.Stat(ep.CertFile); err != nil {
			return nil, fmt.Errorf("no etcd client certificate in %s: is this a server on embedded etcd, and is --data-dir right?", tlsDir)
		}
		return datastore.Client(ep)
	}

	// A server on Dqlite answers the same commands through its member.
	dqliteClient := func() (*dqlite.Client, bool, error) {
		dbDir := filepath.Join(dataDir, "server", "db")
		if !dqlite.HasState(dqlite.Dir(dbDir)) {
			return nil, false, nil
		}
		c, err := dqlite.LocalClient(dbDir, pki.Dir(filepath.Join(dataDir, "server", "tls")))
		return c, true, err
	}
	members := func(cmd *cobra.Command) ([]etcd.Member, error) {
		if dc, ok, err := dqliteClient(); ok {
			if err != nil {
				return nil, err
			}
			ms, err := dc.Members(cmd.Context())
			out := make([]etcd.Member, 0, len(ms))
			for _, m := range ms {
				out = append(out, etcd.Member{Name: m.ID, PeerURLs: []string{"https://" + m.Address}, Learner: !m.Voter,
					Leader: m.Leader, Healthy: m.Healthy, RaftIndex: m.Applied})
			}
			return out, err
		}
		cli, err := connect()
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		return etcd.Members(cmd.Context(), cli)
	}

	var output string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List members: name, ID, peer URL, voter or learner, leader, health",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			members, err := members(cmd)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(members)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tID\tPEER URL\tROLE\tLEADER\tHEALTHY")
			for _, m := range members {
				role := "voter"
				if m.Learner {
					role = "learner"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%v\n", m.Name, m.ID, strings.Join(m.PeerURLs, ","), role, m.Leader, m.Healthy)
			}
			return w.Flush()
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a member (refused when the removal would lose quorum)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dc, ok, err := dqliteClient(); ok {
				if err == nil {
					err = dc.Remove(cmd.Context(), args[0])
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed member %s. To bring that server back, move its <data-dir>/server/db/dqlite away and start it with --server https://<a remaining server>:6443.\n", args[0])
				return nil
			}
			cli, err := connect()
			if err != nil {
				return err
			}
			defer cli.Close()
			m, err := etcd.RemoveMember(cmd.Context(), cli, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed member %s (%s). To bring that server back, start it with --server https://<a remaining server>:6443; it keeps its old data as a backup and rejoins.\n", m.Name, m.ID)
			return nil
		},
	}
	member := &cobra.Command{Use: "member", Short: "List or remove etcd members"}
	member.AddCommand(list, remove)
	cmd.AddCommand(member)
	return cmd
}
