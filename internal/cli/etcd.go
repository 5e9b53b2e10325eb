package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/grpclog"

	"github.com/hakube/hakube/internal/datastore"
	"github.com/hakube/hakube/internal/datastore/local"
	"github.com/hakube/hakube/internal/layout"
	"github.com/hakube/hakube/internal/secretsencrypt"
	"github.com/hakube/hakube/internal/server"
)

// onServerCommand is a command run on a server, which finds the local
// datastore member's credentials through --data-dir.
func onServerCommand(use, short string) (*cobra.Command, *string) {
	dataDir := server.NewConfig().DataDir
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		PersistentPreRun: func(*cobra.Command, []string) {
			// gRPC's connection retries are noise here; failures come back as errors.
			grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
		},
	}
	cmd.PersistentFlags().StringVarP(&dataDir, "data-dir", "d", dataDir, "the local server's data directory")
	return cmd, &dataDir
}

func newEtcdCommand() *cobra.Command {
	cmd, dataDir := onServerCommand("etcd", "Manage the embedded etcd or Dqlite cluster (run on a server; credentials come from --data-dir)")
	localMember := func() local.Datastore { return local.Datastore{Layout: layout.New(*dataDir)} }
	members := func(cmd *cobra.Command) ([]datastore.Member, error) {
		_, ms, err := localMember().Members(cmd.Context())
		return ms, err
	}

	var output string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List members: name, ID, peer URL, voter or learner, leader, health",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			members, err := members(cmd)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), members)
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
			_, m, close, err := localMember().Membership()
			if err != nil {
				return err
			}
			defer close()
			removed, err := m.RemoveMember(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			// A removed server no longer holds up a key change.
			if kv, err := localMember().KV(); err == nil {
				if err := secretsencrypt.DeleteReport(cmd.Context(), kv, removed.Name); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: removing %s's secrets-encryption report: %v\n", removed.Name, err)
				}
				kv.Close()
			}
			name := removed.Name
			if removed.ID != "" {
				name += " (" + removed.ID + ")"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed member %s. To bring that server back, start it with --server https://<a remaining server>:6443; it keeps its old data as a backup and rejoins.\n", name)
			return nil
		},
	}
	member := &cobra.Command{Use: "member", Short: "List or remove etcd members"}
	member.AddCommand(list, remove)
	cmd.AddCommand(member)
	return cmd
}
